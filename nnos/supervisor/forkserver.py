"""The fork server: the loop starts without a second Python start-up and numpy import.

The supervisor imports what the loop needs (numpy, the store, the drivers, the loop itself),
then forks this server while it is still one thread. Asked to start ``python -m MODULE ARGS``,
the server forks twice: the middle process exits at once, so the new one is re-parented to the
supervisor (PID 1 on the device; a child subreaper under ``nnos up``) and the manager waits on,
signals and restarts it exactly as one it had executed itself. The new process then does what
``subprocess.Popen`` would have done between fork and exec — death with the supervisor, its own
session, stdio, environment, nice value, CPU affinity — and runs MODULE as ``__main__``.

A server that fails to start one is left behind: the manager says so and starts it with a new
Python from then on. openpilot's manager starts its Python processes the same way.
"""
from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import time
import traceback

from ..errors import NnosError
from .ownership import die_with_parent

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
MAX_REQUEST = 1 << 20
# the starts that follow the loop's (the control plane, the network, …) come first: what
# ``later`` names is imported once no start has been asked for this long
IDLE_S = 0.5
RESET_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD,
                 signal.SIGALRM, signal.SIGQUIT)


class ForkServerError(NnosError):
    pass


class ForkedProcess:
    """What the manager uses of ``subprocess.Popen``, for a process the fork server started."""

    def __init__(self, pid: int, stderr):
        self.pid, self.stderr, self.returncode = pid, stderr, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._collect(os.WNOHANG)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.005)
        return self.returncode

    def _collect(self, options: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:           # reaped by someone else (PID 1's orphan reaper): gone
            self.returncode = -signal.SIGKILL
            return
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def main_module(cmd: list[str]) -> str | None:
    """What ``python -m MODULE ...`` runs as __main__ (a package's __main__), imported by the
    server ahead of time; None for any other command."""
    if len(cmd) < 3 or cmd[1] != "-m":
        return None
    import importlib.util
    try:
        spec = importlib.util.find_spec(cmd[2])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return f"{cmd[2]}.__main__" if spec.submodule_search_locations is not None else cmd[2]


class ForkServer:
    """Start it while the process is one thread, after importing ``preload``. ``later``: what
    the server imports once a process it started from a module is up (module → names,
    ``settled``): what a restart of it may need and its first start did not (the loop's code
    generator, for a model without a prebuilt object), kept off the way to that first start and
    off the CPU while it starts."""

    def __init__(self, preload: tuple[str, ...], later: dict[str, tuple[str, ...]] | None = None):
        for name in preload:
            importlib.import_module(name)
        title_setter()                      # every process it starts names itself (_name): loaded once, here
        self.preload, self.later = preload, dict(later or {})
        self.supervisor = os.getpid()
        self.subreaper = self.supervisor != 1            # PID 1 is every orphan's parent anyway
        if self.subreaper:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _serve(theirs, self.supervisor, dict(self.later))   # never returns
        theirs.close()
        self.sock, self.pid = ours, pid

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            done = self.pid
        if done:
            self.pid = None
        return self.pid is not None

    def settled(self, cmd: list[str]) -> None:
        """The process started with ``cmd`` is up: the server imports what ``later`` names for its
        module (once; no answer is sent)."""
        if len(cmd) < 3 or self.later.pop(cmd[2], None) is None:
            return
        try:
            self.sock.send(json.dumps({"settled": cmd[2]}).encode())
        except OSError:
            pass                                         # gone: the next start says so

    def spawn(self, cmd: list[str], env: dict, stdout, nice: int = 0, cpus=None) -> ForkedProcess:
        """``cmd`` is ``[python, "-m", MODULE, *args]``; stdin is /dev/null, stdout ``stdout``
        (a file object, subprocess.DEVNULL or None: ours), stderr a new pipe."""
        if len(cmd) < 3 or cmd[1] != "-m":
            raise ForkServerError(f"the fork server runs `python -m MODULE ...`, not {cmd!r}")
        read, write = os.pipe()
        null = os.open(os.devnull, os.O_RDWR)
        out = null if stdout == subprocess.DEVNULL else (stdout.fileno() if stdout is not None else 1)
        req = {"module": cmd[2], "args": cmd[3:], "title": " ".join(cmd), "env": env, "nice": nice,
               "cpus": sorted(cpus) if cpus else None}
        try:
            socket.send_fds(self.sock, [json.dumps(req).encode()], [null, out, write])
            self.sock.settimeout(30.0)
            reply = json.loads(self.sock.recv(MAX_REQUEST) or b"{}")
        except (OSError, ValueError) as e:
            os.close(read)
            raise ForkServerError(f"the fork server (pid {self.pid}) did not start {cmd[2]}: {e}") from e
        finally:
            os.close(write)
            os.close(null)
        if "pid" not in reply:
            os.close(read)
            raise ForkServerError(f"the fork server (pid {self.pid}) did not start {cmd[2]}: "
                                  f"{reply.get('error', 'it closed its socket')}")
        return ForkedProcess(int(reply["pid"]), os.fdopen(read, "rb"))

    def close(self) -> None:
        self.sock.close()                                # the server exits when its socket closes
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.pid = None
        if self.subreaper:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)


def _prctl(option: int, value) -> None:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


# --- in the server ---------------------------------------------------------------------------------
def _serve(sock: socket.socket, supervisor: int, later: dict[str, tuple[str, ...]]) -> None:
    """One request at a time, until the supervisor closes its end (or dies)."""
    code = 0
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != supervisor:
            os._exit(0)
        for sig in RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # what the supervisor's objects hold is closed below: never collect them (a file object
        # finalised later would close a descriptor number since reused)
        gc.freeze()
        os.closerange(3, sock.fileno())                  # the supervisor's lock, logs, sockets
        os.closerange(sock.fileno() + 1, 1 << 16)
        atexit._clear()
        pending: list[str] = []                          # what `settled` asked for, not yet imported
        while True:
            if pending and not _asked(sock, IDLE_S):
                _import_quietly(pending[:1])             # one module at a time, while no start waits
                del pending[:1]
                continue
            msg, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3)
            if not msg:
                break
            req = json.loads(msg)
            if "settled" in req:
                pending += later.pop(req["settled"], ())
                continue
            try:
                sock.send(json.dumps({"pid": _start(req, fds, supervisor)}).encode())
            except OSError as e:
                sock.send(json.dumps({"error": str(e)}).encode())
            finally:
                for fd in fds:
                    os.close(fd)
    except BaseException:                                # noqa: BLE001 - a child must never return into the supervisor
        traceback.print_exc()
        code = 1
    os._exit(code)


def _asked(sock: socket.socket, within: float) -> bool:
    """A request (or the supervisor's close) arrives within ``within`` seconds."""
    return bool(select.select([sock], [], [], within)[0])


def _import_quietly(names) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass                                         # the process that needs it says what is missing


def _start(req: dict, fds: list[int], supervisor: int) -> int:
    """Fork twice; the grandchild's pid comes back through a pipe from the middle process."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read)
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(write)
            _become(req, fds, supervisor, me)            # never returns
        os.write(write, str(pid).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        pid = f.read()
    os.waitpid(middle, 0)
    if not pid:
        raise OSError(f"the middle process {middle} did not fork")
    return int(pid)


def _become(req: dict, fds: list[int], supervisor: int, middle: int) -> None:
    """The new process: Popen's child set-up, then MODULE as __main__; its exit status is its own."""
    code = 1
    try:
        while os.getppid() == middle:                    # until the middle process has exited
            time.sleep(0.0002)
        die_with_parent()
        if os.getppid() != supervisor:                   # the supervisor died in between
            os._exit(1)
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)
        _stdio()
        _name(req["module"], req["title"])               # before the environment changes: it moves it
        os.environ.clear()
        os.environ.update(req["env"])
        if req["nice"]:
            os.nice(req["nice"])
        if req["cpus"]:
            os.sched_setaffinity(0, req["cpus"])
        sys.argv = [req["module"], *req["args"]]
        code = _run(req["module"])
    finally:
        os._exit(code)


def _stdio() -> None:
    """sys.stdin/stdout/stderr on descriptors 0-2 as a new Python has them (whatever the
    supervisor had put in their place)."""
    sys.stdin = sys.__stdin__ = open(0, closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")


def _name(module: str, title: str) -> None:
    """Its command line in ps and /proc (the command it would have been executed with), and its
    name in top: the module's, cut to 15 bytes."""
    set_title = title_setter()
    if set_title is not None:                            # without it ps shows the supervisor's command line
        set_title(title)
    _prctl(PR_SET_NAME, module.removesuffix(".__main__").encode()[-15:])


_TITLE: list = []


def title_setter():
    """setproctitle's C function, loaded from its extension module without running the
    package's __init__, which imports logging (≈ 40 ms of an emulated boot, benchmarks/RESULTS.md,
    issue 21) for messages it logs only when the extension is missing; None without it."""
    if not _TITLE:
        _TITLE.append(_load_title_setter())
    return _TITLE[0]


def _load_title_setter():
    import importlib.machinery
    import importlib.util
    package = importlib.util.find_spec("setproctitle")          # found, not imported
    for folder in (package.submodule_search_locations or []) if package is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_setproctitle" + suffix)
            if not os.path.exists(path):
                continue
            try:
                spec = importlib.util.spec_from_file_location("setproctitle._setproctitle", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except ImportError:
                return None
            return module.setproctitle
    return None


def _run(module: str) -> int:
    code = 0
    sys.modules.pop(f"{module}.__main__", None)         # preloaded for its imports: now run as __main__
    if main_module([sys.executable, "-m", module]) == module:
        sys.modules.pop(module, None)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:                                # noqa: BLE001 - as Python's own top level would
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:                                # noqa: BLE001
        pass
    return code
