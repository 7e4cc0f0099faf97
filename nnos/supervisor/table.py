"""The process table: every process nnos runs, declared once.

Each entry says how to start it, when it should run, how its liveness is checked (a heartbeat
it publishes) and what to do when it dies. The manager reconciles the table against reality.
Stop order: lower first — the loop goes first so that actuators reach their safe values
before anything else stops.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import flags
from ..telemetry import TelemetryReader


@dataclass
class Context:
    board_path: str
    data: str
    board: object
    run: str

    @property
    def logs(self) -> str:
        return os.path.join(self.data, "logs")

    def link(self, device: str) -> str:
        return os.path.join(self.run, f"dev-{device}")


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    command: Callable[[Context], list[str]]
    run_if: Callable[[Context], bool] = lambda ctx: True
    heartbeat: Optional[Callable[[Context], Optional[int]]] = None   # ns (CLOCK_MONOTONIC) of last sign of life
    watchdog_s: Optional[float | Callable[[Context], float]] = None  # (read when it starts)
    watchdog_grace_s: float = 5.0              # for its first heartbeat after a start
    restart: str = "always"                # "always" | "on-failure" | "never"
    stop_order: int = 50
    start_after: tuple[str, ...] = ()
    ready: Optional[Callable[[Context], bool]] = None   # serving; what starts after it waits for this
    nice: int = 0
    env: dict = field(default_factory=dict)
    storm: Optional[tuple[int, float]] = None  # (restarts, seconds): more within the window → give up
    # {"cpu_percent", "memory_mb"}: cgroup v2 or SCHED_IDLE, off the loop's CPU
    limits: Optional[Callable[[Context], dict]] = None
    off_loop_cpu: bool = False                 # never scheduled on the loop's CPU (set before exec: every thread inherits it)


def _py(*args) -> list[str]:
    return [sys.executable, *args]


def loop_heartbeat(ctx: Context) -> Optional[int]:
    path = os.path.join(ctx.run, "telemetry")
    if not os.path.exists(path):
        return None
    try:
        r = TelemetryReader(path)
    except (ValueError, OSError):
        return None
    try:
        hb = r.counters()["heartbeat_ns"]
        return hb or None
    finally:
        r.close()


def loop_ready(ctx: Context) -> bool:
    return loop_heartbeat(ctx) is not None


def api_ready(ctx: Context) -> bool:
    """The control plane accepts connections (it listens on API_HOST; loopback reaches it either way)."""
    import socket
    try:
        with socket.create_connection(("127.0.0.1", flags.API_PORT.get()), timeout=0.05):
            return True
    except OSError:
        return False


def _loop_cmd(ctx: Context) -> list[str]:
    devs = [f"--device={d.name}={ctx.link(d.name)}" for d in ctx.board.devices if d.simulator]
    return _py("-m", "nnos.runtime", "--board", ctx.board_path, "--data", ctx.data, *devs)


def simulators(ctx: Context) -> list[ProcessSpec]:
    out = []
    for d in ctx.board.devices:
        if d.simulator:
            cmd = [sys.executable] + d.simulator[1:] if d.simulator[0] in ("python", "python3") else list(d.simulator)
            out.append(ProcessSpec(f"sim-{d.name}", lambda c, cmd=cmd, n=d.name: cmd + ["--port-link", c.link(n)],
                                   stop_order=90, nice=0))
    return out


def legacy_socket(ctx: Context) -> str:
    return os.path.join(ctx.run, "legacy-vm.sock")


def _legacy_vm_cmd(ctx: Context) -> list[str]:
    d = flags.LEGACY_VM.get()
    kernel = flags.LEGACY_VM_KERNEL.get() or os.path.join(d, "vmlinuz")
    return _py("-m", "nnos.legacy.vm", "--kernel", kernel, "--initrd", os.path.join(d, "initrd.img"),
               "--socket", legacy_socket(ctx), "--data", ctx.data,
               "--console", os.path.join(ctx.logs, "legacy-vm-console.log"))


def _legacy_vm_heartbeat(ctx: Context) -> Optional[int]:
    """The guest's last line to the broker (it pings every quarter of its watchdog period)."""
    import json
    try:
        with open(os.path.join(ctx.run, "broker.json")) as f:
            return json.load(f).get("last_request_ns") or None
    except (OSError, ValueError):
        return None


def _legacy_vm_watchdog(ctx: Context) -> float:
    from ..legacy import settings
    return float(settings.load(ctx.data)["watchdog_s"])


def _legacy_vm_limits(ctx: Context) -> dict:
    """Its CPU share and memory from DATA/legacy-vm.json; the cap on memory covers qemu itself too."""
    from ..legacy import settings
    s = settings.load(ctx.data)
    return {"cpu_percent": s["cpu_percent"], "memory_mb": s["memory_mb"] + 128}


def network_config(ctx: Context) -> str:
    """The device's network config lives beside the data directory: /data/config/network.toml."""
    return os.path.join(os.path.dirname(os.path.abspath(ctx.data)), "config", "network.toml")


def table(ctx: Context) -> list[ProcessSpec]:
    return simulators(ctx) + [
        ProcessSpec("loop", _loop_cmd, heartbeat=loop_heartbeat, watchdog_s=lambda c: flags.LOOP_WATCHDOG_S.get(),
                    watchdog_grace_s=flags.LOOP_START_GRACE_S.get(), stop_order=0, ready=loop_ready,
                    start_after=tuple(f"sim-{d.name}" for d in ctx.board.devices if d.simulator)),
        ProcessSpec("control-plane", lambda c: _py("-m", "nnos.controlplane", "--data", c.data, "--board", c.board_path,
                                                   "--host", flags.API_HOST.get(), "--port", str(flags.API_PORT.get())),
                    run_if=lambda c: flags.API_PORT.get() > 0, stop_order=30, nice=5, start_after=("loop",),
                    ready=api_ready, off_loop_cpu=True),
        # on the device (nnos-init): the network comes up after the loop ticks, never before it;
        # udhcpc stays in the background renewing the lease, so a clean exit is the normal case
        ProcessSpec("network", lambda c: _py("-m", "nnos.boot.network", "--config", network_config(c)),
                    run_if=lambda c: os.environ.get("NNOS_INIT") == "1", restart="on-failure", stop_order=80,
                    nice=5, start_after=("loop",)),
        # the legacy VM: last (once the loop ticks and the control plane answers), lowest, capped,
        # off the loop's CPU; its only channel is the broker
        ProcessSpec("broker", lambda c: _py("-m", "nnos.legacy.broker", "--data", c.data, "--socket", legacy_socket(c)),
                    run_if=lambda c: bool(flags.LEGACY_VM.get()), stop_order=60, nice=10, start_after=("loop",),
                    off_loop_cpu=True),
        ProcessSpec("legacy-vm", _legacy_vm_cmd, run_if=lambda c: bool(flags.LEGACY_VM.get()), stop_order=70, nice=19,
                    start_after=("loop", "broker") + (("control-plane",) if flags.API_PORT.get() > 0 else ()),
                    storm=(5, 120.0), limits=_legacy_vm_limits, heartbeat=_legacy_vm_heartbeat,
                    watchdog_s=_legacy_vm_watchdog, watchdog_grace_s=300.0),
        ProcessSpec("hotplug", lambda c: _py("-m", "nnos.supervisor.hotplug", "--board", c.board_path, "--data", c.data),
                    run_if=lambda c: any(d.usb for d in c.board.devices), stop_order=20, nice=5),
    ]
