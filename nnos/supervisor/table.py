"""The process table: every process nnos runs, declared once, one line each.

Each entry says how to start it, when it should run (a named predicate), how its liveness is
checked (its heartbeat under the one convention of nnos/heartbeat.py, and the watchdog period)
and what to do when it dies. The manager reconciles the table against reality. Stop order:
lower first — the loop goes first so that actuators reach their safe values before anything
else stops.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import flags, heartbeat

BUS_SOCKET = "/run/dbus/system_bus_socket"


@dataclass
class Context:
    """What the table's predicates and commands read: the board, its file, the data and run directories."""
    board_path: str
    data: str
    board: object
    run: str

    @property
    def logs(self) -> str:
        return os.path.join(self.data, "logs")

    def link(self, device: str) -> str:
        return os.path.join(self.run, f"dev-{device}")


# --- when each process runs: named predicates --------------------------------------------------
def always(ctx: Context) -> bool:
    return True


def api_enabled(ctx: Context) -> bool:
    return flags.API_PORT.get() > 0


def on_device(ctx: Context) -> bool:
    """Started by nnos-init on the appliance (not `nnos up` on a laptop)."""
    return os.environ.get("NNOS_INIT") == "1"


def legacy_vm_enabled(ctx: Context) -> bool:
    return bool(flags.LEGACY_VM.get())


def updates_enabled(ctx: Context) -> bool:
    """An image with update slots (RAUC's system config), on the device."""
    return on_device(ctx) and os.path.exists(flags.RAUC_CONF.get())


def update_gate_enabled(ctx: Context) -> bool:
    """The health-gated commit asks the control plane: both must run."""
    return updates_enabled(ctx) and api_enabled(ctx)


def foxglove_enabled(ctx: Context) -> bool:
    return flags.FOXGLOVE.get()


def mdns_enabled(ctx: Context) -> bool:
    """Announced on the local network (the data partition's nnos.env: NNOS_MDNS=1), with an API to find."""
    return flags.MDNS.get() and api_enabled(ctx)


def usb_devices(ctx: Context) -> bool:
    """The board finds a device by its USB identity: hotplug watches for it."""
    return any(d.usb for d in ctx.board.devices)


@dataclass(frozen=True)
class ProcessSpec:
    """One line of the process table: a name, a command and when it runs and restarts."""
    name: str
    command: Callable[[Context], list[str]]
    run_if: Callable[[Context], bool] = always
    heartbeat: Optional[str] = None            # the name it beats under (nnos/heartbeat.py); None: no watchdog
    watchdog_s: Optional[float | Callable[[Context], float]] = None  # (read when it starts)
    watchdog_grace_s: float | Callable[[Context], float] = 5.0   # for its first heartbeat after a start (read then)
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
    forked: bool = False                       # `python -m MODULE`, forked from the fork server when there is one


def _py(*args) -> list[str]:
    return [sys.executable, *args]


def beat(ctx: Context, name: str) -> Optional[int]:
    """A process's last heartbeat (monotonic ns), or None."""
    return heartbeat.read(ctx.run, name)


def loop_ready(ctx: Context) -> bool:
    return beat(ctx, "loop") is not None


def listening(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:``port``. (A plain connect: create_connection
    resolves the name through getaddrinfo, which imports the idna codec — 80 ms of a boot under
    emulation, on the way to the first tick.)"""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.05)
    try:
        return s.connect_ex(("127.0.0.1", port)) == 0
    except OSError:
        return False
    finally:
        s.close()


def api_ready(ctx: Context) -> bool:
    """The control plane accepts connections (it listens on API_HOST; loopback reaches it either way)."""
    return listening(flags.API_PORT.get())


def _loop_cmd(ctx: Context) -> list[str]:
    devs = [f"--device={d.name}={ctx.link(d.name)}" for d in ctx.board.devices if d.simulator]
    return _py("-m", "nnos.runtime", "--board", ctx.board_path, "--data", ctx.data, *devs)


def simulators(ctx: Context) -> list[ProcessSpec]:
    out = []
    for d in ctx.board.devices:
        if d.simulator:
            cmd = [sys.executable] + d.simulator[1:] if d.simulator[0] in ("python", "python3") else list(d.simulator)
            # ready when its port is there: a loop started before it would open nothing and fail safe
            out.append(ProcessSpec(f"sim-{d.name}", lambda c, cmd=cmd, n=d.name: cmd + ["--port-link", c.link(n)],
                                   ready=lambda c, n=d.name: os.path.exists(c.link(n)), forked=True,
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


def _legacy_vm_watchdog(ctx: Context) -> float:
    from ..legacy import settings
    return float(settings.load(ctx.data)["watchdog_s"])


def _legacy_vm_grace(ctx: Context) -> float:
    from ..legacy import settings
    return float(settings.load(ctx.data)["start_grace_s"])


def _legacy_vm_limits(ctx: Context) -> dict:
    """Its CPU share and memory from DATA/legacy-vm.json; the cap on memory covers qemu itself too."""
    from ..legacy import settings
    s = settings.load(ctx.data)
    return {"cpu_percent": s["cpu_percent"], "memory_mb": s["memory_mb"] + 128}


def network_config(ctx: Context) -> str:
    """The device's network config lives beside the data directory: /data/config/network.toml."""
    return os.path.join(os.path.dirname(os.path.abspath(ctx.data)), "config", "network.toml")


def _api_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.controlplane", "--data", ctx.data, "--board", ctx.board_path,
               "--host", flags.API_HOST.get(), "--port", str(flags.API_PORT.get()))


def _network_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.boot.network", "--config", network_config(ctx))


def coldplug_needed(ctx: Context) -> bool:
    """On the device, where nnos-init started udevd."""
    return on_device(ctx) and on_path("udevadm")


def on_path(program: str) -> bool:
    """As shutil.which, without importing shutil on the way to the first tick (≈ 30 ms emulated)."""
    return any(os.access(os.path.join(d, program), os.X_OK) for d in os.environ.get("PATH", os.defpath).split(os.pathsep))


def _coldplug_cmd(ctx: Context) -> list[str]:
    return ["sh", "-c", "udevadm trigger --type=subsystems --action=add; udevadm trigger --type=devices --action=add"]


def _broker_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.legacy.broker", "--data", ctx.data, "--socket", legacy_socket(ctx))


def _hotplug_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.supervisor.hotplug", "--board", ctx.board_path, "--data", ctx.data)


def _foxglove_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.foxglove_server", "--run", ctx.run, "--port", str(flags.FOXGLOVE_PORT.get()),
               "--hz", str(flags.FOXGLOVE_HZ.get()), "--name", f"nnos {ctx.board.name}")


def _mdns_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.supervisor.mdns", "--data", ctx.data, "--run", ctx.run,
               "--port", str(flags.API_PORT.get()), "--board", ctx.board.name)


def _dbus_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.update.services", "dbus", "--data", ctx.data)


def bus_ready(ctx: Context) -> bool:
    return os.path.exists(BUS_SOCKET)


def _rauc_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.update.services", "rauc")


def _update_health_cmd(ctx: Context) -> list[str]:
    return _py("-m", "nnos.update.health", "--data", ctx.data)


def _loop_watchdog(ctx: Context) -> float:
    return flags.LOOP_WATCHDOG_S.get()


def _sims(ctx: Context) -> tuple[str, ...]:
    return tuple(f"sim-{d.name}" for d in ctx.board.devices if d.simulator)


def table(ctx: Context) -> list[ProcessSpec]:
    """The loop first; the network, the control plane and hotplug only after it ticks; the legacy
    VM last, lowest, capped and off the loop's CPU, its only channel the broker. udhcpc (network)
    stays in the background renewing the lease, so its clean exit is the normal case. The
    control plane and the network are forked too: no Python start-up or numpy import of their
    own (≈ 3 s each of an emulated boot; they import the rest themselves, up.py). The legacy
    VM, its broker and the update services are executed. With those forked too, the image's
    legacy VM guest twice did not reach its broker within the test's 300 s (and update-health's
    `rauc status` went unanswered for 60 s); with only the broker forked it did, after 268 s
    (benchmarks/RESULTS.md, the legacy VM's boot): the cause is not settled."""
    api = ("control-plane",) if api_enabled(ctx) else ()
    P = ProcessSpec
    return simulators(ctx) + [
        P("loop", _loop_cmd, forked=True, heartbeat="loop", watchdog_s=_loop_watchdog, ready=loop_ready, start_after=_sims(ctx),
          watchdog_grace_s=flags.LOOP_START_GRACE_S.get(), stop_order=0),
        P("control-plane", _api_cmd, run_if=api_enabled, ready=api_ready, start_after=("loop",), off_loop_cpu=True,
          stop_order=30, nice=5, forked=True),
        P("network", _network_cmd, run_if=on_device, restart="on-failure", start_after=("loop",), stop_order=80, nice=5,
          forked=True),
        P("broker", _broker_cmd, run_if=legacy_vm_enabled, start_after=("loop",), off_loop_cpu=True, stop_order=60, nice=10),
        P("legacy-vm", _legacy_vm_cmd, run_if=legacy_vm_enabled, start_after=("loop", "broker") + api, heartbeat="legacy-vm",
          watchdog_s=_legacy_vm_watchdog, watchdog_grace_s=_legacy_vm_grace, storm=(5, 120.0), limits=_legacy_vm_limits,
          stop_order=70, nice=19),
        P("foxglove", _foxglove_cmd, run_if=foxglove_enabled, start_after=("loop",), off_loop_cpu=True,
          stop_order=40, nice=10),
        # once the API answers: nothing is announced that is not there yet (avahi-daemon, in its own mount namespace)
        P("mdns", _mdns_cmd, run_if=mdns_enabled, start_after=("loop",) + api, off_loop_cpu=True, restart="on-failure",
          storm=(3, 60.0), stop_order=35, nice=10),
        # udev's coldplug (the drivers of what is plugged in: the NIC, USB, cameras) once the loop
        # ticks: nnos-init starts udevd only, so its workers do not compete with the way to the
        # first tick; the devices it brings are hotplug's to tell the loop of
        P("coldplug", _coldplug_cmd, run_if=coldplug_needed, restart="never", start_after=("loop",), stop_order=90,
          nice=5),
        # after the loop: its first tick does not wait for udev's enumeration (the loop looks for
        # its devices itself; the watcher's first scan tells it of any that came since)
        P("hotplug", _hotplug_cmd, run_if=usb_devices, start_after=("loop",), stop_order=20, nice=5),
        # updates: the system bus, RAUC's service (idle CPU and I/O priority: an install takes what
        # the loop leaves), and once a boot the health-gated commit of the booted slot
        P("dbus", _dbus_cmd, run_if=updates_enabled, start_after=("loop",), ready=bus_ready, off_loop_cpu=True,
          stop_order=87, nice=10),
        P("rauc", _rauc_cmd, run_if=updates_enabled, start_after=("dbus",), off_loop_cpu=True, stop_order=86, nice=19),
        P("update-health", _update_health_cmd, run_if=update_gate_enabled, start_after=("rauc",) + api,
          restart="on-failure", off_loop_cpu=True, stop_order=85, nice=10),
    ]
