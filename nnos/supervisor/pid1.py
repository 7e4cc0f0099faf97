"""What the supervisor does when it is the device's PID 1 (`nnos up --init`, exec'd by
nnos-init): reap orphaned processes, stamp the boot timeline (first tick, control plane ready)
on the console, and reboot or power off when asked (SIGTERM: reboot, SIGUSR2: power off — the
signals busybox's and sysvinit's tools send to init) or when the supervisor itself fails.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time

from ..timeline import stamp
from . import bootcpu
from ..telemetry import TelemetryReader
from .table import listening

RB_AUTOBOOT = 0x01234567
RB_POWER_OFF = 0x4321FEDC


def reap_orphans(managed: set[int]) -> int:
    """Collect exited children that are not the manager's own (daemons that double-forked, the
    boot's helpers): without this they stay zombies forever under PID 1."""
    n = 0
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return n
        if info is None or info.si_pid in managed:
            return n                                   # the manager's Popen collects its own
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
            n += 1
        except ChildProcessError:
            return n


class BootTimeline:
    """Stamps 'first tick' and 'control plane ready' once each; with ``cpu``, also where the CPUs
    went between the two (bootcpu.py)."""

    def __init__(self, run: str, api_port: int, cpu: bool = False):
        self.run, self.api_port = run, api_port
        self.first_tick = False
        self.api_ready = api_port <= 0
        self.next_check = 0.0
        self.cpu = cpu
        self.cpu_at_tick: dict | None = None

    def poll(self) -> None:
        if self.first_tick and self.api_ready:
            return
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + 0.05
        if not self.first_tick:
            try:
                r = TelemetryReader(os.path.join(self.run, "telemetry"))
                try:
                    c = r.counters()
                    first = r.records(c["ticks"]) if 0 < c["ticks"] < r.capacity - 1 else None
                finally:
                    r.close()
                if c["ticks"] > 0:
                    self.first_tick = True
                    # at the tick's own time (its record), not when this poll saw it: the
                    # supervisor is busy starting the processes that wait for the first tick
                    at = int(first["t_ns"][0]) if first is not None and len(first) else None
                    stamp(f"loop: first tick (model {c['active'][:12] or '-'}, mode {c['mode']})", monotonic_ns=at)
                    if self.cpu:
                        self.cpu_at_tick = bootcpu.snapshot()
            except (OSError, ValueError, KeyError):
                pass
        if not self.api_ready and listening(self.api_port):
            self.api_ready = True
            stamp(f"control plane: ready on port {self.api_port}")
            if self.cpu_at_tick is not None:
                for line in bootcpu.report(self.cpu_at_tick, bootcpu.snapshot(), "first tick to control plane ready"):
                    stamp(line)


def power(how: str) -> None:
    """Sync, unmount the data partition read-only, and reboot or power off (never returns)."""
    stamp(f"init: {how}")
    os.sync()
    subprocess.run(["mount", "-o", "remount,ro", "/data"], capture_output=True)
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)          # the C library Python runs on (nnos/boot/datapart.py)
    libc.reboot(RB_POWER_OFF if how == "power off" else RB_AUTOBOOT)
    while True:                                       # not reached; PID 1 must never exit
        time.sleep(1)


def how_to_stop(signum: int | None) -> str:
    return "power off" if signum == signal.SIGUSR2 else "reboot"
