"""python -m nnos.runtime --board FILE --data DIR: the loop process (started by `nnos up`)."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
from nnos_hardware import kmod
from nnos_hardware.board import load_board
from nnos_hardware.devices.factory import make_devices
from nnos_hardware.errors import HardwareError

from .. import flags
from ..cmdline import Parser
from ..timeline import on_console, since_boot
from ..frames import FrameWriter
from ..heartbeat import Heartbeat
from ..store import ModelStore
from ..telemetry import ChannelWriter, TelemetryWriter
from . import realtime
from .control import ControlServer
from .loop import Loop, LoopConfig


DROPPED = [0]
ON_CONSOLE = on_console()


def log(msg: str) -> None:
    """Never blocks the loop: stderr is non-blocking; a line that does not fit is dropped, counted.
    On the device a line of the boot timeline (seconds since boot), elsewhere the wall clock's time."""
    when = f"nnos {since_boot():7.2f}s" if ON_CONSOLE else time.strftime("%H:%M:%S")
    line = f"[{when}] {msg}\n".encode()
    if DROPPED[0]:
        line = f"[{DROPPED[0]} log lines dropped]\n".encode() + line
    try:
        os.write(2, line)
        DROPPED[0] = 0
    except (BlockingIOError, OSError):
        DROPPED[0] += 1


def run_paths(data: str) -> dict:
    run = os.path.join(data, "run")
    os.makedirs(run, exist_ok=True)
    return {"run": run, "telemetry": os.path.join(run, "telemetry"), "socket": os.path.join(run, "loop.sock"),
            "channels": os.path.join(run, "channels")}


def channel_sources(board, devices) -> list:
    """Every channel of the board for the channel ring: (what it is, its live array)."""
    out = []
    for d in board.devices:
        dev = devices[d.name]
        for c in d.channels:
            live = dev.samples[c.name].values if c.name in dev.samples else dev.commands[c.name]
            out.append(({"topic": f"/{d.name}/{c.name}", "device": d.name, "channel": c.name, "kind": c.kind,
                         "shape": list(c.shape), "range": [c.lo, c.hi], "units": c.units, "dtype": str(c.dtype),
                         "names": [c.label(i) for i in range(c.size)]}, live))
    return out


def frame_writers(run: str, board, devices) -> list:
    """A frame ring per camera channel (uint8 [H, W, 3]): recordings take its frames as JPEG."""
    out = []
    for d in board.devices:
        for c in d.channels:
            if c.dtype == np.uint8 and len(c.shape) == 3 and c.shape[2] == 3 and c.name in devices[d.name].samples:
                what = {"topic": f"/{d.name}/{c.name}", "device": d.name, "channel": c.name, "shape": list(c.shape)}
                out.append(FrameWriter(os.path.join(run, f"frames-{d.name}-{c.name}"), what, devices[d.name].samples[c.name]))
    return out


def with_present(board, overrides: dict[str, str]) -> dict[str, str]:
    """``overrides`` (NAME → path) and where the board's USB devices already are: plugged in
    before this loop started (a restart, a crash), no add event will come for them."""
    if not any(d.usb and d.name not in overrides for d in board.devices):
        return overrides
    try:
        from nnos_hardware.hotplug import present
        found = present(board)
    except Exception as e:                        # no udev here: hotplug events will say where it is
        log(f"loop: cannot look for USB devices at start ({type(e).__name__}: {e}); waiting for hotplug")
        return overrides
    for name, node in found.items():
        log(f"loop: device {name} is present at {node}")
    return {**found, **overrides}


def open_devices(devices: dict) -> list[str]:
    """Open each device; the names of those not there yet (the loop reconnects them)."""
    lost = []
    for name, dev in devices.items():
        try:
            dev.open()
            log(f"loop: device {name} open ({getattr(dev, 'device_id', '') or type(dev).__name__})"
                + (f"; {dev.latency_note}" if getattr(dev, "latency_note", "") else ""))
        except HardwareError as e:
            log(f"loop: device {name} not available yet: {e}")
            lost.append(name)
    return lost


def stopped(loop, tel) -> None:
    """What the loop left the actuators at, and its counters."""
    rules = ", ".join(f"{c.device}.{c.name}: {c.mode}" for c in loop.act.channels)
    log(f"loop: stopped; actuators by their failsafe rules ({rules}); torque off where a device has it")
    c = {k: int(tel.c[i]) for k, i in tel.idx.items()}
    log(f"loop: {c['ticks']} ticks, {c['misses']} missed, {c['failsafe_entries']} failsafe entries, "
        f"{c['swaps']} swaps, {c['rollbacks']} rollbacks")


def main(argv=None) -> int:
    ap = Parser(prog="python -m nnos.runtime")
    ap.add_argument("--board", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", action="append", default=[], metavar="NAME=PATH", help="where a device is")
    ap.add_argument("--duration", type=float)
    ap.add_argument("--no-rt", action="store_true", help="do not ask for real-time scheduling")
    ap.add_argument("--budget", type=float, default=flags.LOOP_BUDGET.get(),
                    help="share of the period a model may use (p99.9)")
    a = ap.parse_args(argv)
    os.set_blocking(2, False)
    if not a.no_rt:
        for k, v in realtime.setup().items():
            log(f"loop: {k}: {v}")
    board = load_board(a.board)
    kmod.load(board.modules, log)
    paths = run_paths(a.data)
    devices = make_devices(board, with_present(board, dict(d.split("=", 1) for d in a.device)))
    lost = open_devices(devices)
    tel = TelemetryWriter(paths["telemetry"])
    tel.set("pid", os.getpid())
    server = ControlServer(paths["socket"])
    chans = ChannelWriter(paths["channels"], channel_sources(board, devices),
                          frames=frame_writers(paths["run"], board, devices))
    loop = Loop(board, devices, ModelStore(a.data), tel, LoopConfig(budget_fraction=a.budget), log=log,
                heartbeat=Heartbeat(paths["run"], "loop"), channels=chans)
    for name in lost:
        loop.io.lose(name)
    if any(d.armable for d in devices.values()):
        try:
            log(f"loop: calibration applied to {', '.join(loop.apply_calibration()) or 'nothing (none stored yet)'}")
        except HardwareError as e:
            log(f"loop: calibration not applied, arming is refused until one is stored: {e}")
    signal.signal(signal.SIGTERM, lambda *_: setattr(loop, "stop", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(loop, "stop", True))
    if flags.HW_WATCHDOG.get():
        loop.arm_watchdog(flags.HW_WATCHDOG.get())
    loop.load_initial()
    gil = realtime.gil_for(devices)
    if gil:
        log(f"loop: {gil}")
    log(f"loop: ticking at {board.rate_hz:g} Hz, budget {loop.budget / 1000:.0f} µs; control at {paths['socket']}")
    try:
        loop.run(server, a.duration)
    finally:
        loop.shutdown()
        stopped(loop, tel)
        server.close()
        tel.close()
        chans.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
