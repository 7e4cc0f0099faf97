"""Channels: the named, typed signals a device exposes (sensors in, actuators out)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

SENSOR, ACTUATOR = "sensor", "actuator"
# What an actuator does in failsafe and when nnos stops:
FAILSAFE_MODES = {
    "hold": "keep the last command sent (the present position right after arming)",
    "ramp": "move to the safe value no faster than max_rate",
    "torque_off": "hold, and switch the device's torque off",
    "value": "the safe value at once (still no faster than max_rate when one is declared)",
}
DTYPES = ("float32", "int16", "uint16", "int32", "uint8")



@dataclass(frozen=True)
class Channel:
    """One sensor or actuator channel of a device: shape, dtype, range and limits."""
    name: str
    kind: str                          # SENSOR or ACTUATOR
    shape: tuple[int, ...]
    lo: float                          # valid range (sensors) / command range (actuators)
    hi: float
    units: str = ""
    safe: float = 0.0                  # actuators: the value written in failsafe
    rate_hz: int = 0
    dtype: np.dtype = field(default=np.dtype(np.float32))
    out_of_range: str = "failsafe"     # sensors: a reading outside [lo, hi] is a fault ("failsafe")
    fault_after: int = 1               # ... after this many in a row; "clamp": clamped and counted
    names: tuple[str, ...] = ()        # one label per element (joint names), or none
    max_rate: float = 0.0              # actuators: the most change per second (0: no limit), in every tick
    failsafe: str = "value"            # actuators: hold | ramp | torque_off | value (see FAILSAFE_MODES)

    @cached_property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def label(self, i: int) -> str:
        """Element ``i``'s name: its declared name, else the channel's name (with [i] when it has more)."""
        if i < len(self.names):
            return self.names[i]
        return self.name if self.size == 1 else f"{self.name}[{i}]"


class Sample:
    """The latest reading of a sensor channel, updated in place (no allocation per sample)."""
    __slots__ = ("values", "t_device_us", "t_host", "count", "out_of_range", "bad_run", "bad_value")

    def __init__(self, channel: Channel):
        self.values = np.zeros(channel.shape, channel.dtype)
        self.t_device_us = 0          # device clock of the reading
        self.t_host = 0.0             # time.monotonic() when the host received it
        self.count = 0                # readings received so far
        self.out_of_range = 0         # readings outside the channel's valid range
        self.bad_run = 0              # ... of them in a row, up to the latest reading
        self.bad_value = 0.0          # the last value outside the range

    def check(self, channel: Channel) -> None:
        """After a reading is stored: a value outside the channel's range (NaN too) is counted
        and clamped into the range in place — never passed on as it came — and ``bad_run``
        tells the loop how many readings in a row were out of range."""
        v = self.values
        lo, hi = _MIN(v, axis=None), _MAX(v, axis=None)
        if channel.lo <= lo and hi <= channel.hi:
            self.bad_run = 0
            return
        self.out_of_range += 1
        self.bad_run += 1
        self.bad_value = float(hi if hi > channel.hi else lo if lo < channel.lo else np.nan)
        np.clip(v, channel.lo, channel.hi, out=v)
        np.nan_to_num(v, copy=False, nan=channel.lo)


_MIN, _MAX = np.minimum.reduce, np.maximum.reduce
