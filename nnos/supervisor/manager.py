"""The manager: reconciles the process table with the running processes.

Every 50 ms: start what should run and is not (after what it must start after, and after its
restart backoff), reap what exited, kill what stopped sending heartbeats (the watchdog), and
count and log every restart. SIGTERM stops everything in the table's stop order.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from .. import flags, heartbeat
from ..fsutil import append_rotating, redact
from ..runtime.realtime import loop_cpu, other_cpus
from ..timing import NS_PER_S, now_ns
from .ownership import die_with_parent, record_children
from .table import Context, ProcessSpec

BACKOFF_START, BACKOFF_MAX, HEALTHY_AFTER = 0.5, 10.0, 30.0
STOP_GRACE = 5.0
PERIOD = 0.05               # between reconciles
READY_POLL = 0.005          # between looks at the readiness of a process another's start waits on
READY_POLL_FOR = 2.0        # ... in the first seconds after it started
LOG_MAX = 1 << 20


@dataclass
class Running:
    """A process of the table as it runs: its process, start time and restarts."""
    spec: ProcessSpec
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_START
    next_start: float = 0.0
    last_exit: int | None = None
    watchdog_kills: int = 0
    events: list = field(default_factory=list)
    recent: list = field(default_factory=list)      # exit times inside the storm window
    gave_up: str | None = None                      # why it is no longer restarted
    held: bool = False                              # stopped on request: not started until asked
    ready: bool = False                             # its spec's ready() was seen true since it started
    watchdog_s: float | None = None                 # the spec's, read at its start
    watchdog_grace_s: float = 0.0                   # the same
    started_ns: int = 0
    armed: bool = False                             # the watchdog: a heartbeat was seen since the start
    beat_ns: int = 0                                # the newest heartbeat seen since the start
    beats: heartbeat.Reader | None = None           # its heartbeat file, mapped


def _child_setup(spec: ProcessSpec):
    """What runs in the child between fork and exec: death with the supervisor, its nice value
    and, for a process that must never compete with the loop, every CPU but the loop's."""
    nice = spec.nice
    loop = loop_cpu()
    others = other_cpus(loop) if spec.off_loop_cpu and loop is not None else None

    def setup() -> None:
        die_with_parent()
        if nice:
            os.nice(nice)
        if others is not None:
            os.sched_setaffinity(0, others)
    return setup


class Manager:
    def __init__(self, ctx: Context, specs: list[ProcessSpec], log=print, stdout=None, echo: bool = True,
                 forkserver=None):
        self.ctx, self.log, self.echo = ctx, log, echo
        self.forkserver = forkserver                    # starts the `forked` specs (forkserver.py)
        self.procs = {s.name: Running(s) for s in specs}
        self.stopping = False
        self.stop_signal: int | None = None
        self.stdout = stdout

    # --- one reconciliation pass -------------------------------------------------------------------
    def reconcile(self) -> None:
        """For each process: reap it if it exited, kill it if it missed its watchdog, start it
        if it should run and does not."""
        now = time.monotonic()
        for r in self.procs.values():
            self._reap(r, now)
            self._watchdog(r, now)
            if self._should_start(r, now):
                self._start(r, now)
            if r.proc is not None and now - r.started > HEALTHY_AFTER:
                r.backoff = BACKOFF_START

    def _reap(self, r: Running, now: float) -> None:
        if r.proc is not None and r.proc.poll() is not None:
            self._exited(r, now)

    def _watchdog(self, r: Running, now: float) -> None:
        """Armed by the first heartbeat after a start (or once its grace is over); a beat older
        than the process's watchdog period kills it (and it restarts like any exit)."""
        s = r.spec
        if r.proc is None or not r.watchdog_s or not s.heartbeat:
            return
        if r.beats is None:
            r.beats = heartbeat.Reader(self.ctx.run, s.heartbeat)
        hb = r.beats.read()
        if hb and hb >= r.started_ns:                   # one from before this start does not count
            r.beat_ns = max(r.beat_ns, hb)
        r.armed = r.armed or r.beat_ns > 0
        age = (now_ns() - r.beat_ns) / NS_PER_S if r.beat_ns else None
        if (r.armed or now - r.started > r.watchdog_grace_s) and (age is None or age > r.watchdog_s):
            self.log(f"supervisor: {s.name} (pid {r.proc.pid}) missed its watchdog "
                     f"({'no heartbeat' if age is None else f'{age:.2f} s'} > {r.watchdog_s} s): killing it")
            r.watchdog_kills += 1
            r.proc.kill()
            r.proc.wait()
            self._exited(r, now)

    def _should_start(self, r: Running, now: float) -> bool:
        s = r.spec
        if r.proc is not None or self.stopping or r.gave_up is not None or r.held or now < r.next_start:
            return False
        if r.last_exit is not None and (s.restart == "never" or (s.restart == "on-failure" and r.last_exit == 0)):
            return False
        return s.run_if(self.ctx) and all(self._up(n) for n in s.start_after)

    def _up(self, name: str) -> bool:
        """Serving, when its spec says how to tell; else running for 0.3 s at least (all there is
        to go by: a process that fails at once is not taken for up). A simulator ready at once
        lets the loop start at once (0.3 s of an emulated boot's way to the first tick)."""
        r = self.procs.get(name)
        if r is None or r.proc is None:
            return False
        if r.spec.ready is None:
            return time.monotonic() - r.started > 0.3
        if not r.ready:
            r.ready = bool(r.spec.ready(self.ctx))
            if r.ready and r.spec.forked and self.forkserver is not None:
                self.forkserver.settled(r.spec.command(self.ctx))     # what its restart needs, now
        return r.ready

    def _start(self, r: Running, now: float) -> None:
        cmd = r.spec.command(self.ctx)
        env = dict(os.environ, **r.spec.env)
        # BLAS's own thread pool is never used (plan calls limit it to NNOS_BLAS_THREADS): not
        # starting it makes numpy's import ~3x faster and the locked memory 40 MB smaller
        env.setdefault("OPENBLAS_NUM_THREADS", str(flags.BLAS_THREADS.get()))
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        r.proc = self._forked(r.spec, cmd, env) if r.spec.forked and self.forkserver is not None else None
        if r.proc is None:
            r.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=subprocess.PIPE,
                                      preexec_fn=_child_setup(r.spec), start_new_session=True)
        threading.Thread(target=self._pump, args=(r.spec.name, r.proc.stderr), daemon=True).start()
        r.started, r.started_ns, r.ready, r.armed, r.beat_ns = now, now_ns(), False, False, 0
        if r.beats is not None:                         # mapped again: the file may be a new one
            r.beats.close()
            r.beats = None
        if self.ctx.run:
            record_children(self.ctx.run, {n: x.proc.pid for n, x in self.procs.items() if x.proc is not None})
        r.watchdog_s = r.spec.watchdog_s(self.ctx) if callable(r.spec.watchdog_s) else r.spec.watchdog_s
        grace = r.spec.watchdog_grace_s
        r.watchdog_grace_s = grace(self.ctx) if callable(grace) else grace
        if r.spec.limits:
            from .limits import apply
            lim = r.spec.limits(self.ctx) if callable(r.spec.limits) else r.spec.limits
            self.log(f"supervisor: {r.spec.name} limited: " + apply(r.proc.pid, r.spec.name, lim["cpu_percent"],
                                                                    lim["memory_mb"], loop_cpu()))
        self.log(f"supervisor: started {r.spec.name} (pid {r.proc.pid})" +
                 (f", restart #{r.restarts}" if r.restarts else ""))

    def _forked(self, spec: ProcessSpec, cmd: list[str], env: dict):
        """The process from the fork server (its imports done); None when there is none: a
        server that failed is said once and not asked again."""
        from .forkserver import ForkServerError, main_module
        if main_module(cmd) is None:                    # not `python -m MODULE`: executed as it is
            return None
        loop = loop_cpu()
        cpus = other_cpus(loop) if spec.off_loop_cpu and loop is not None else None
        try:
            pid = self.forkserver.pid
            if not self.forkserver.alive():
                raise ForkServerError(f"it exited (pid {pid})")
            return self.forkserver.spawn(cmd, env, self.stdout, spec.nice, cpus)
        except ForkServerError as e:
            self.log(f"supervisor: fork server: {e}; {spec.name} and what follows start with a new Python")
            self.forkserver = None
            return None

    def _pump(self, name: str, stream) -> None:
        """A child's stderr: to DATA/logs/NAME.log (kept to ~1 MiB) and to ours."""
        os.makedirs(self.ctx.logs, exist_ok=True)
        path = os.path.join(self.ctx.logs, f"{name}.log")
        for line in iter(stream.readline, b""):
            line = redact(line)
            try:
                append_rotating(path, line, LOG_MAX)
            except OSError:
                pass
            if self.echo:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
        stream.close()

    def _exited(self, r: Running, now: float) -> None:
        code = r.proc.returncode
        r.last_exit, r.proc = code, None
        if self.stopping:
            return
        if r.spec.restart == "never" or (r.spec.restart == "on-failure" and code == 0):
            self.log(f"supervisor: {r.spec.name} exited ({code}); not restarting ({r.spec.restart})")
            return
        if r.spec.storm:
            count, window = r.spec.storm
            r.recent = [t for t in r.recent if now - t <= window] + [now]
            if len(r.recent) > count:
                r.gave_up = f"restart storm: {len(r.recent)} exits in {window:g} s (last {code})"
                self.log(f"supervisor: {r.spec.name}: {r.gave_up}; not restarting it until asked")
                return
        r.restarts += 1
        r.next_start = now + r.backoff
        self.log(f"supervisor: {r.spec.name} exited with {code}; restart #{r.restarts} in {r.backoff:.1f} s")
        r.backoff = min(r.backoff * 2, BACKOFF_MAX)

    # --- whole runs --------------------------------------------------------------------------------
    def run(self, duration_s: float | None = None, on_tick=None) -> None:
        end = None if duration_s is None else time.monotonic() + duration_s
        def on_signal(signum, _frame):
            self.stop_signal = signum
            self.stopping = True
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(sig, on_signal)
        from ..runtime.control import ControlServer
        server = ControlServer(os.path.join(self.ctx.run, "supervisor.sock")) if self.ctx.run else None
        try:
            while not self.stopping and (end is None or time.monotonic() < end):
                self.reconcile()
                while server is not None and (req := server.receive()) is not None:
                    msg, addr = req
                    server.reply(addr, dict(self.answer(msg), id=msg.get("id")))
                if on_tick:
                    on_tick(self)
                self._pause(PERIOD)
        finally:
            if server is not None:
                server.close()
            self.stop()

    def _pause(self, period: float) -> None:
        """Until the next reconcile; sooner once a process another's start waits on is ready
        (the loop starts the moment its simulator serves, not up to a period later: on the way
        to the first tick). Only that readiness is looked at, not the whole table."""
        end = time.monotonic() + period
        awaited = self._awaited()
        while awaited and time.monotonic() + READY_POLL < end:
            time.sleep(READY_POLL)
            if any(w.spec.ready(self.ctx) for w in awaited):
                return
        time.sleep(max(0.0, end - time.monotonic()))

    def _awaited(self) -> list[Running]:
        """Processes started in the last READY_POLL_FOR seconds, not yet ready, that a process
        not yet started waits on."""
        if self.stopping:
            return []
        now = time.monotonic()
        names = {n for r in self.procs.values() if r.proc is None and r.gave_up is None for n in r.spec.start_after}
        return [w for w in map(self.procs.get, sorted(names))
                if w is not None and w.proc is not None and w.spec.ready is not None and not w.ready
                and now - w.started < READY_POLL_FOR]

    def stop(self) -> None:
        """Stop in order: the loop first (it writes safe values on SIGTERM), then the rest."""
        self.stopping = True
        for r in sorted(self.procs.values(), key=lambda r: r.spec.stop_order):
            if r.proc is None or r.proc.poll() is not None:
                continue
            self._terminate(r)
            self.log(f"supervisor: stopped {r.spec.name} ({r.last_exit})")
        if self.forkserver is not None:
            self.forkserver.close()
            self.forkserver = None

    def _terminate(self, r: Running) -> None:
        """SIGTERM, STOP_GRACE to exit, then SIGKILL; the process is collected."""
        r.proc.send_signal(signal.SIGTERM)
        try:
            r.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.log(f"supervisor: {r.spec.name} ignored SIGTERM for {STOP_GRACE} s: killing it")
            r.proc.kill()
            r.proc.wait()
        r.last_exit, r.proc = r.proc.returncode, None

    def status(self) -> dict:
        now = time.monotonic()

        def state(r: Running) -> str:
            if r.proc is not None:
                return "running"
            if r.held:
                return "stopped (on request)"
            if r.gave_up:
                return "stopped: " + r.gave_up
            return "not running" if not r.spec.run_if(self.ctx) else "starting"
        return {n: {"pid": r.proc.pid if r.proc else None, "state": state(r), "enabled": r.spec.run_if(self.ctx),
                    "restarts": r.restarts,
                    "last_exit": r.last_exit, "watchdog_kills": r.watchdog_kills, "gave_up": r.gave_up,
                    "uptime_s": round(now - r.started, 1) if r.proc else None} for n, r in self.procs.items()}

    def retry(self, name: str) -> None:
        """Start a process that was given up on (a restart storm) or stopped on request again,
        with a fresh storm window."""
        r = self.procs[name]
        r.gave_up, r.recent, r.next_start, r.held = None, [], 0.0, False

    def hold(self, name: str) -> None:
        """Stop one process and keep it stopped until retry()."""
        r = self.procs[name]
        r.held = True
        if r.proc is not None and r.proc.poll() is None:
            self._terminate(r)
            self.log(f"supervisor: stopped {name} on request")

    # --- requests from the control plane (DATA/run/supervisor.sock) -----------------------------
    CONTROLLABLE = ("legacy-vm",)                   # what may be started/stopped from outside

    def answer(self, msg: dict) -> dict:
        cmd, name = msg.get("cmd"), msg.get("name")
        if cmd == "status":
            return {"ok": True, "processes": self.status()}
        if cmd in ("start", "stop"):
            if name not in self.procs or name not in self.CONTROLLABLE:
                return {"ok": False, "error": f"{name!r} cannot be started or stopped from outside; "
                                              f"controllable: {[n for n in self.CONTROLLABLE if n in self.procs]}"}
            self.retry(name) if cmd == "start" else self.hold(name)
            return {"ok": True, "process": self.status()[name]}
        if cmd == "vm.network":
            return self._vm_network(msg.get("enabled"))
        return {"ok": False, "error": f"unknown command {cmd!r}; expected status, start, stop, vm.network"}

    def _vm_network(self, on) -> dict:
        """Cut or restore the legacy VM's outside network: saved (it holds across restarts) and,
        when its namespace exists, switched at once."""
        from ..legacy import netns, settings
        if "legacy-vm" not in self.procs:
            return {"ok": False, "error": "no legacy VM on this device"}
        if not isinstance(on, bool):
            return {"ok": False, "error": f"enabled must be true or false, got {on!r}"}
        settings.save(self.ctx.data, network=on)
        if netns.uplink_up() is not None:
            try:
                netns.switch(on)
            except netns.NetworkError as e:
                return {"ok": False, "error": f"saved, but switching failed: {e}"}
        self.log(f"supervisor: legacy-vm network {'restored' if on else 'cut'} on request")
        return {"ok": True, "network": netns.state()}
