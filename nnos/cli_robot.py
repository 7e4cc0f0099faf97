"""`nnos calibrate`, `nnos record`, `nnos replay`: a robot's calibration, and recording the live
loop and replaying a recording into a candidate model (added to the CLI's parser by cli.py)."""
from __future__ import annotations

import os
import time

from nnos_hardware.errors import HardwareError

from . import backends, flags
from .errors import NnosError


def cmd_calibrate(a):
    """`nnos calibrate BOARD`: record each servo bus's joint ranges (moved by hand, torque off)
    or take the servos' own limits, and store them crash-safe in the data partition."""
    from nnos_hardware import calibrate, calibration
    from nnos_hardware.board import load_board
    from nnos_hardware.devices.factory import make_device
    from nnos_hardware.hotplug import present
    board = load_board(a.board)
    buses = calibration.servo_devices(board)
    if not buses:
        raise NnosError(f"board {board.name!r} has no servo bus (driver feetech or dynamixel) to calibrate")
    paths = dict(d.split("=", 1) for d in a.device)
    if any(d.usb and d.name not in paths for d in buses):
        paths.update({k: v for k, v in present(board).items() if k not in paths})
    found = {}
    for cfg in buses:
        if not (paths.get(cfg.name) or cfg.path):
            raise NnosError(f"device {cfg.name!r}: not found; plug it in or pass --device {cfg.name}=PATH")
        dev = make_device(cfg, paths.get(cfg.name))
        try:
            dev.open()
        except HardwareError as e:
            raise NnosError(f"{e} (is nnos running? it holds the bus: stop it, or calibrate through "
                            "PUT /v1/calibration)") from e
        try:
            if a.from_servos:
                found[cfg.name] = calibrate.from_servos(dev, a.invert)
            else:
                print(f"{cfg.name}: torque is off; move every joint through its whole range for {a.seconds:g} s")
                found[cfg.name] = calibrate.record(dev, a.seconds, a.invert)
        finally:
            dev.close()
    for name, joints in found.items():
        for j, c in joints.items():
            print(f"{name}.{j}: servo {c.id}, ticks {c.min}..{c.max}, zero at {c.homing}, direction {c.direction:+d}")
    where = calibration.save(a.data, board, found)
    print(f"stored in {where}: the loop applies it when it starts (to a running nnos: nnos ctl calibration {where})")


def cmd_record(a):
    """`nnos record --seconds N`: the running loop's channels, timing, model and failsafe events
    as MCAP, read from its shared memory (the loop is not touched)."""
    from .recorder import record
    run = os.path.join(a.data, "run")
    if not os.path.exists(os.path.join(run, "channels")):
        raise NnosError(f"no running loop in {a.data} (no {run}/channels): start nnos up first")
    out = a.out or os.path.join(a.data, "recordings", time.strftime("%Y%m%d-%H%M%S") + ".mcap")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        got = record(run, out, a.seconds, a.channels or None, board_path=a.board)
    except ValueError as e:
        raise NnosError(str(e)) from e
    print(f"{got['path']}: {got['ticks']} ticks, {got['messages']} messages, {got['bytes']} bytes")


def cmd_replay(a):
    """`nnos replay RECORDING --model CANDIDATE`: the recording's sensor data into the candidate,
    as fast as it runs; with --compare, its actions against the recorded ones per channel."""
    from .runtime.replay import evaluate
    if not os.path.exists(a.recording):
        raise NnosError(f"{a.recording}: no such recording")
    rep = evaluate(a.recording, a.model, a.backend, a.threshold, a.board, a.out)
    print(f"{a.recording}: {rep['ticks']} ticks into {os.path.basename(a.model)} "
          f"({rep['compared_ticks']} compared: the recorded loop was running, after {rep['warmup_ticks']} "
          "warming up)" + (f"; its actions in {a.out}" if a.out else ""))
    if a.compare:
        for topic, d in rep["channels"].items():
            first = f", first above {a.threshold:g} at tick {d['first_above']}" if d["first_above"] is not None else ""
            print(f"  {topic}: max {d['max']:.6g}, rms {d['rms']:.6g}, {d['ticks_above']} ticks above{first}")


def add_parsers(sub) -> None:
    cal = sub.add_parser("calibrate", help="record a board's servo joint ranges (by hand, or the servos' own limits)")
    cal.add_argument("board")
    cal.add_argument("--data", default=flags.DATA.get(), help="data directory (NNOS_DATA) to store it in")
    cal.add_argument("--device", action="append", default=[], metavar="NAME=PATH", help="where a bus is")
    cal.add_argument("--seconds", type=float, default=20.0, help="how long to record while moving the joints")
    cal.add_argument("--from-servos", action="store_true", help="take the limits the servos keep instead")
    cal.add_argument("--invert", action="append", default=[], metavar="JOINT", help="a joint that turns the other way")
    cal.set_defaults(fn=cmd_calibrate)
    rec = sub.add_parser("record", help="record the running loop's channels as MCAP")
    rec.add_argument("--seconds", type=float, required=True)
    rec.add_argument("--data", default=flags.DATA.get(), help="data directory of the running nnos (NNOS_DATA)")
    rec.add_argument("--out", help="the .mcap file (default DATA/recordings/DATE-TIME.mcap)")
    rec.add_argument("--channels", nargs="*", metavar="/DEVICE/CHANNEL", help="only these (default: all)")
    rec.add_argument("--board", help="the running board's file, kept in the recording for nnos replay")
    rec.set_defaults(fn=cmd_record)
    rp = sub.add_parser("replay", help="a recording's sensor data into a candidate model, its actions compared")
    rp.add_argument("recording")
    rp.add_argument("--model", required=True, help="the candidate: an .onnx or a plan")
    rp.add_argument("--compare", action="store_true", help="per channel: max and RMS divergence, first tick above")
    rp.add_argument("--threshold", type=float, default=0.05)
    rp.add_argument("--out", help="write the candidate's actions here as MCAP")
    rp.add_argument("--board", help="bind with this board instead of the one in the recording")
    rp.add_argument("--backend", default="numpy", choices=backends.NAMES)
    rp.set_defaults(fn=cmd_replay)
