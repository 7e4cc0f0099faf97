"""The fork server: a process started from it is the supervisor's child, set up as Popen would
have set it up, and dies with the supervisor; a server that is gone is replaced by exec."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from nnos.supervisor.forkserver import ForkServer, ForkServerError
from nnos.supervisor.manager import Manager
from nnos.supervisor.table import Context, ProcessSpec
from tests.support.paths import ROOT
from tests.support.procs import gone
from tests.support.timing import scaled, wait_until

CHILD = [sys.executable, "-m", "tests.support.forked_child"]


@pytest.fixture
def server():
    fs = ForkServer(("numpy",))
    yield fs
    fs.close()


def test_a_forked_process_is_our_child_set_up_as_popen_would(server):
    cpus = {max(os.sched_getaffinity(0))}
    p = server.spawn(CHILD + ["3"], dict(os.environ, FORKED_CHILD_ENV="given"), subprocess.DEVNULL, nice=5, cpus=cpus)
    seen = json.loads(p.stderr.readline())
    assert p.wait(scaled(30)) == 3                          # its exit status, collected by us
    assert seen["pid"] == p.pid and seen["ppid"] == os.getpid()
    assert seen["sid"] == p.pid                             # its own session
    assert seen["nice"] == min(19, os.nice(0) + 5) and seen["cpus"] == sorted(cpus)
    assert seen["env"] == "given" and seen["argv"] == ["3"]
    assert seen["fds"] == [0, 1, 2, 3]                      # stdio, and the one listing them: nothing inherited
    assert seen["numpy"] is True                            # imported before the fork, not by it
    assert seen["comm"] == "rt.forked_child"                 # its name in top: the module's, cut to 15
    assert seen["cmdline"] == " ".join(CHILD + ["3"])       # in ps: the command it stands for


def test_what_a_restart_needs_is_imported_once_the_first_start_is_up_and_starts_come_first(monkeypatch):
    """``later``: imported by the server once a process started from that module is up
    (``settled``: the loop's code generator, off the way to its first tick and off the CPU while
    it starts; there for a restart), and only once no start has been asked for IDLE_S: the
    starts that follow the loop's (the control plane, the network) never wait on that import.
    The module watched is one nothing else in the suite imports (colorsys was, by PIL, on the
    same worker)."""
    import nnos.supervisor.forkserver as forkserver
    assert "tabnanny" not in sys.modules
    idle = scaled(1.0)
    monkeypatch.setattr(forkserver, "IDLE_S", idle)          # the server reads it after its fork
    fs = ForkServer(("numpy",), later={"tests.support.forked_child": ("tabnanny", "no_such_module_here")})
    cmd = CHILD + ["0"]

    def watched() -> bool:
        p = fs.spawn(cmd, dict(os.environ, FORKED_CHILD_WATCH="tabnanny"), subprocess.DEVNULL)
        seen = json.loads(p.stderr.readline())["watched"]
        assert p.wait(scaled(30)) == 0
        return seen
    try:
        assert watched() is False                           # before it settled
        fs.settled(cmd)
        assert watched() is False                           # asked at once: served before the import
        wait_until(watched, 30, "the server to import what `later` names once idle", every=2 * idle)
        assert "tabnanny" not in sys.modules                # in the server, not the supervisor
        fs.settled(cmd)                                     # once: nothing more is sent
        assert watched() is True                            # a module that does not import is left to its user
    finally:
        fs.close()


def test_a_forked_process_is_signalled_and_reaped_like_any_child(server):
    p = server.spawn(CHILD + ["sleep"], dict(os.environ), subprocess.DEVNULL)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(0.2)
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        assert p.wait(scaled(30)) == -signal.SIGTERM
    finally:
        p.kill()


def test_only_python_modules_are_forked(server, tmp_path):
    with pytest.raises(ForkServerError, match="python -m MODULE"):
        server.spawn(["sleep", "1"], dict(os.environ), None)
    # in the table: another command is executed as it is, and the server stays for the rest
    ctx = Context(board_path="", data=str(tmp_path), board=None, run=str(tmp_path / "run"))
    specs = [ProcessSpec("other", lambda ctx: ["sleep", "600"], forked=True),
             ProcessSpec("child", lambda ctx: CHILD + ["sleep"], forked=True)]
    m = Manager(ctx, specs, log=print, echo=False, forkserver=server)
    try:
        m.reconcile()
        assert isinstance(m.procs["other"].proc, subprocess.Popen)
        assert type(m.procs["child"].proc).__name__ == "ForkedProcess"
    finally:
        m.forkserver = None                                 # the fixture closes it
        m.stop()


def test_a_gone_fork_server_is_said_and_processes_start_with_a_new_python(tmp_path, server):
    logs = []
    spec = ProcessSpec("child", lambda ctx: CHILD + ["sleep"], forked=True)
    ctx = Context(board_path="", data=str(tmp_path), board=None, run=str(tmp_path / "run"))
    m = Manager(ctx, [spec], log=logs.append, echo=False, forkserver=server)
    try:
        m.reconcile()
        first = m.procs["child"].proc
        assert type(first).__name__ == "ForkedProcess", logs
        os.kill(server.pid, signal.SIGKILL)
        first.kill()
        wait_until(lambda: first.poll() is not None, 10, "the forked child's exit")
        m.reconcile()                                       # reaped: restarted after its backoff
        m.procs["child"].next_start = 0
        m.reconcile()
        assert isinstance(m.procs["child"].proc, subprocess.Popen)
        assert any("fork server: it exited" in line and "start with a new Python" in line for line in logs), logs
    finally:
        m.stop()


def test_forked_processes_and_the_server_die_with_the_supervisor_however_it_dies(tmp_path):
    code = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from nnos.supervisor.forkserver import ForkServer
fs = ForkServer(("json",))
p = fs.spawn([sys.executable, "-m", "tests.support.forked_child", "sleep"], dict(os.environ), None)
print(p.pid, fs.pid, flush=True)
import time; time.sleep(600)
"""
    parent = subprocess.Popen([sys.executable, "-c", code, ROOT], stdout=subprocess.PIPE, cwd=ROOT)
    pids = [int(x) for x in parent.stdout.readline().split()]
    parent.stdout.readline()                                # the child's own pid line: it runs
    parent.kill()
    parent.wait()

    wait_until(lambda: all(gone(pid) for pid in pids), 30, "the forked child and the fork server to end with their supervisor")


def test_the_process_title_is_set_without_importing_logging():
    """setproctitle's package __init__ imports logging (≈ 40 ms of an emulated boot) for messages
    it logs only when its C module is missing: the server loads the C module alone. Checked in a
    new Python, where nothing else has imported logging."""
    code = ("import sys\n"
            "from nnos.supervisor.forkserver import title_setter\n"
            "title_setter()('nnos titled process')\n"
            "print(open('/proc/self/cmdline').read().rstrip('\\0 '), 'logging' in sys.modules, "
            "'setproctitle' in sys.modules, sep='|')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split("|") == ["nnos titled process", "False", "False"]
