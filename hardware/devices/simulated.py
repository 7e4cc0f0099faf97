"""An in-process simulated device: channels as configured, readings from a function of time
(or pushed with ``feed``), commands kept for inspection. For laptops, unit tests and replays."""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Optional

import numpy as np

from ..channels import Channel
from ..device import Device
from ..errors import DeviceError


class SimulatedDevice(Device):
    def __init__(self, name: str, channels: list[Channel], source: Optional[Callable[[float], dict]] = None,
                 rate_hz: float = 0.0, keep_sent: int = 10000):
        super().__init__(name)
        self._set_channels(channels)
        self.source, self.rate_hz = source, rate_hz
        # (ref timestamp, commands) per flush, newest last; keep_sent=0 keeps none
        self.sent: deque = deque(maxlen=keep_sent)
        self.flushes = 0
        self._next = 0.0

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.write_safe()
        if self.is_open:
            self.flush()
        self.is_open = False

    def feed(self, channel: str, values, t_device_us: int | None = None) -> None:
        s = self.latest(channel)
        v = np.asarray(values, dtype=s.values.dtype).reshape(s.values.shape)
        np.copyto(s.values, v)
        s.t_device_us = int(time.monotonic() * 1e6) if t_device_us is None else t_device_us
        s.t_host = time.monotonic()
        s.count += 1
        s.check(self.channels[channel])

    def poll(self, timeout: float = 0.0) -> int:
        self._require_open()
        if self.source is None:
            if timeout:
                time.sleep(timeout)
            return 0
        now = time.monotonic()
        if self.rate_hz and now < self._next:
            time.sleep(min(timeout, self._next - now))
            if time.monotonic() < self._next:
                return 0
        self._next = max(self._next + (1.0 / self.rate_hz if self.rate_hz else 0), now)
        readings = self.source(now)
        for name, v in readings.items():
            if name not in self.samples:
                raise DeviceError(self.name, f"source produced unknown sensor channel {name!r}")
            self.feed(name, v)
        return len(readings)

    def flush(self, ref_timestamp_us: int = 0) -> None:
        self._require_open()
        self.flushes += 1
        if self.sent.maxlen:
            self.sent.append((ref_timestamp_us, {k: v.copy() for k, v in self.commands.items()}))
