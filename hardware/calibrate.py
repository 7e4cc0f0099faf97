"""Recording a servo bus's calibration (``nnos calibrate BOARD``): with torque off, a person
moves every joint through its whole range by hand while the bus is read; each joint's range is
the ticks it reached and its zero (``homing``) the middle of them. Or, ``from_servos``: the
limits each servo already keeps in its EEPROM (Min/Max_Position_Limit)."""
from __future__ import annotations

import time

from .calibration import JointCalibration
from .errors import DeviceError

MIN_SPAN = 0.05                 # of a turn: a joint that moved less was not moved through its range


def from_servos(dev, invert=()) -> dict[str, JointCalibration]:
    return {j.name: JointCalibration(j.servo_id, (j.lo_ticks + j.hi_ticks) // 2, -1 if j.name in invert else 1,
                                     j.lo_ticks, j.hi_ticks) for j in dev.joints}


def record(dev, seconds: float, invert=(), show=print, every_s: float = 0.5) -> dict[str, JointCalibration]:
    """Read ``dev`` (open, disarmed) for ``seconds`` while its joints are moved by hand."""
    if dev.armed:
        raise DeviceError(dev.name, "armed: disarm it before moving its joints by hand")
    n = len(dev.joints)
    lo, hi = [None] * n, [None] * n
    end, shown = time.monotonic() + seconds, 0.0
    while time.monotonic() < end:
        dev.flush()                                  # a transaction now (disarmed: reads only)
        time.sleep(0.01)
        ticks, seen = dev.raw_positions()
        for k in range(n):
            if seen[k]:
                t = int(ticks[k])
                lo[k] = t if lo[k] is None else min(lo[k], t)
                hi[k] = t if hi[k] is None else max(hi[k], t)
        if time.monotonic() - shown >= every_s:
            shown = time.monotonic()
            show("  " + "  ".join(f"{j.name} {lo[k]}..{hi[k]}" for k, j in enumerate(dev.joints)))
    unread = [j.name for k, j in enumerate(dev.joints) if lo[k] is None]
    if unread:
        raise DeviceError(dev.name, f"no position read from {', '.join(unread)}: is every servo powered and answering?")
    span = int(MIN_SPAN * dev.table.resolution)
    still = [f"{j.name} ({hi[k] - lo[k]} ticks)" for k, j in enumerate(dev.joints) if hi[k] - lo[k] < span]
    if still:
        raise DeviceError(dev.name, f"joints that hardly moved: {', '.join(still)}; move each joint through its "
                          f"whole range (at least {span} ticks) while recording")
    return {j.name: JointCalibration(j.servo_id, (lo[k] + hi[k]) // 2, -1 if j.name in invert else 1, lo[k], hi[k])
            for k, j in enumerate(dev.joints)}
