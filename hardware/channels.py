"""Channels: the named, typed signals a device exposes (sensors in, actuators out)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

SENSOR, ACTUATOR = "sensor", "actuator"


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str                          # SENSOR or ACTUATOR
    shape: tuple[int, ...]
    lo: float                          # valid range (sensors) / command range (actuators)
    hi: float
    units: str = ""
    safe: float = 0.0                  # actuators: the value written in failsafe
    rate_hz: int = 0
    dtype: np.dtype = field(default=np.dtype(np.float32))

    @cached_property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class Sample:
    """The latest reading of a sensor channel, updated in place (no allocation per sample)."""
    __slots__ = ("values", "t_device_us", "t_host", "count", "out_of_range")

    def __init__(self, channel: Channel):
        self.values = np.zeros(channel.shape, channel.dtype)
        self.t_device_us = 0          # device clock of the reading
        self.t_host = 0.0             # time.monotonic() when the host received it
        self.count = 0                # readings received so far
        self.out_of_range = 0         # readings outside the channel's valid range
