"""The arm boards (so101, koch) as tests run them: the real board file with its USB identity
swapped for a simulated bus, a calibration for the simulated servos, and the bus trace (every
goal and torque write the simulated servos received)."""
from __future__ import annotations

import os
import re

from nnos_hardware.board import load_board
from tests.support.paths import BOARDS, ROOT

SIM = {"so101": '["python", "-m", "nnos_hardware.sim", "feetech-arm", "--servos", "6"{extra}]',
       "koch": '["python", "-m", "nnos_hardware.sim", "dynamixel-arm", "--servos", "6", "--model", '
               '"xl430-w250,xl430-w250,xl330-m288,xl330-m288,xl330-m288,xl330-m288"{extra}]'}
SPAN = 1200                      # calibrated ticks either side of the centre


def board_text(name: str, *, path: str | None = None, sim_args: tuple = (), edits: dict | None = None) -> str:
    """hardware/boards/NAME.toml, found at ``path`` (a pty) or started as a simulator, the
    model path absolute, and ``edits`` (regex → replacement) applied."""
    text = open(os.path.join(BOARDS, f"{name}.toml")).read()
    if path:
        finder = f'path = "{path}"'
    else:
        extra = "".join(f', "{a}"' for a in sim_args)
        finder = "simulator = " + SIM[name].format(extra=extra)
    text = re.sub(r"^usb = .*$", finder, text, count=1, flags=re.M)
    text = re.sub(r'^model = "(models/[^"]+)"', lambda m: f'model = "{ROOT}/{m.group(1)}"', text, count=1, flags=re.M)
    for pattern, repl in (edits or {}).items():
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n, f"board edit {pattern!r} matched nothing"
    return text


def write_board(tmp_path, name: str, **kw):
    p = tmp_path / f"{name}.toml"
    p.write_text(board_text(name, **kw))
    return load_board(str(p))


def calibration_doc(board, span: int = SPAN, centre: int = 2048) -> dict:
    """PUT /v1/calibration's body for the simulated arm: every joint centred, ± ``span``."""
    return {"devices": {d.name: {j: {"id": i, "homing": centre, "direction": 1, "min": centre - span,
                                     "max": centre + span} for j, i in zip(d.joint_names, d.servo_ids)}
                        for d in board.devices if d.joint_names}}


def read_trace(path: str) -> list[tuple[float, str, dict[int, int]]]:
    """The simulated bus's trace: (time, register, {servo id: value}) per write."""
    out = []
    with open(path) as f:
        for line in f:
            t, reg, *vals = line.split()
            out.append((float(t), reg, {int(k): int(v) for k, v in (x.split("=") for x in vals)}))
    return out


def goal_jumps(trace, step_ticks: float, period_s: float) -> list[str]:
    """Goal writes that moved a servo faster than ``step_ticks`` a period allows (a write that
    came after skipped ticks may carry their steps too; one tick of rounding is allowed)."""
    bad, last = [], {}
    for t, reg, vals in trace:
        if reg != "Goal_Position":
            continue
        for sid, v in vals.items():
            if sid in last:
                t0, v0 = last[sid]
                allowed = step_ticks * max(1, int((t - t0) / period_s + 1.5)) + 1
                if abs(v - v0) > allowed:
                    bad.append(f"servo {sid}: {v0} → {v} in {1000 * (t - t0):.1f} ms (allowed {allowed:.1f})")
            last[sid] = (t, v)
    return bad
