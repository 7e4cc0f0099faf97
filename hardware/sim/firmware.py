"""The device side of nnos serial protocol v1, as a microcontroller would implement it.

Answers HELLO with DESCRIBE, sends SENSOR frames, applies ACTUATE frames (refusing unknown
channels and out-of-range values with ERROR frames), and falls back to every actuator's safe
value when the host has been silent for ``host_timeout_s`` (the device-side watchdog).
"""
from __future__ import annotations

import time

import numpy as np

from ..protocol import frames as fr
from ..protocol.link import Link


class Firmware:
    def __init__(self, transport, device_id: str, channels: list[fr.ChannelInfo], firmware: str = "nnos-sim 1.0",
                 host_timeout_s: float = 0.5, version: int = fr.PROTOCOL_VERSION):
        self.link = Link(transport, device_id)
        self.device_id, self.firmware, self.version = device_id, firmware, version
        self.channels = channels
        self.by_id = {c.id: c for c in channels}
        self.actuators = {c.id: np.full(c.shape, c.safe, np.float32) for c in channels if c.kind == fr.ACTUATOR}
        self.host_timeout_s = host_timeout_s
        self.connected = False          # a host has said HELLO
        self.failsafe = False           # host silent too long: actuators at their safe values
        self.last_host = 0.0
        self.last_ref_us = 0            # the sensor timestamp the latest command answered
        self.commands = 0
        self.failsafe_entries = 0
        self.refused = 0
        self.rtt_us: list[int] = []     # sensor timestamp → command arrival, when record_rtt is set
        self.record_rtt = False

    def now_us(self) -> int:
        return int(time.monotonic() * 1e6)

    def service(self, timeout: float = 0.0) -> int:
        """Handle what the host sent; returns the number of ACTUATE frames applied."""
        applied = 0
        for f in self.link.poll(timeout):
            self.last_host = time.monotonic()
            if f.type == fr.FrameType.HELLO:
                self.link.send(fr.FrameType.DESCRIBE, fr.describe(self.device_id, self.firmware, self.channels,
                                                                  self.version))
                self.connected = True
                self.link.reset_sequence()
            elif f.type == fr.FrameType.ACTUATE:
                applied += self._actuate(f.payload)
            elif f.type in (fr.FrameType.HEARTBEAT, fr.FrameType.ERROR):
                pass
            else:
                self._error(fr.ErrorCode.UNKNOWN_TYPE, f"frame type {f.type:#x} not accepted by a device")
        if self.connected and not self.failsafe and time.monotonic() - self.last_host > self.host_timeout_s:
            self.safe()                  # host silent: actuators to their safe values
        return applied

    def safe(self) -> None:
        """Every actuator to its safe value until the next valid command."""
        if not self.failsafe:
            self.failsafe_entries += 1
        self.failsafe = True
        for cid, v in self.actuators.items():
            v.fill(self.by_id[cid].safe)

    def _actuate(self, payload: bytes) -> int:
        sizes = {c.id: c.size for c in self.channels if c.kind == fr.ACTUATOR}
        try:
            ref, entries = fr.parse_values(payload, sizes)
        except fr.FrameError as e:
            self._error(fr.ErrorCode.BAD_LENGTH if "expected" in str(e) else fr.ErrorCode.UNKNOWN_CHANNEL, str(e))
            return 0
        staged = []
        for cid, off in entries:
            c = self.by_id[cid]
            v = np.frombuffer(payload, "<f4", c.size, off).reshape(c.shape)
            if not (np.all(v >= c.lo) and np.all(v <= c.hi)):
                self._error(fr.ErrorCode.OUT_OF_RANGE, f"{c.name}: {v.tolist()} outside [{c.lo}, {c.hi}]")
                return 0
            staged.append((cid, v))
        for cid, v in staged:            # all or nothing
            np.copyto(self.actuators[cid], v)
        self.failsafe = False
        if self.record_rtt and ref and len(self.rtt_us) < 1_000_000:
            self.rtt_us.append(self.now_us() - ref)
        self.last_ref_us = ref
        self.commands += 1
        return 1

    def _error(self, code: int, message: str) -> None:
        self.refused += 1
        self.link.send(fr.FrameType.ERROR, fr.error_payload(code, message))

    def send_sensors(self, values: dict[int, np.ndarray], timestamp_us: int | None = None) -> int:
        ts = self.now_us() if timestamp_us is None else timestamp_us
        self.link.send(fr.FrameType.SENSOR, fr.values_payload(ts, list(values.items())))
        return ts
