"""A device that speaks nnos serial protocol v1 over a serial port (USB CDC, UART, a pty).

open(): HELLO → DESCRIBE handshake; the channel list it describes must match the configured
one. poll(): SENSOR frames update the latest samples; HEARTBEATs keep the device fresh; ERROR
frames are counted and kept. The host sends a HEARTBEAT whenever it has sent nothing for
``heartbeat_s`` so the device's own watchdog stays quiet.
"""
from __future__ import annotations

import time

import numpy as np

from ..channels import ACTUATOR, SENSOR, Channel
from ..device import Device
from ..errors import HardwareError, ProtocolError
from ..protocol import frames as fr
from ..protocol.link import Link
from ..transport import SerialTransport


_MIN, _MAX = np.minimum.reduce, np.maximum.reduce


def channel_from_info(c: fr.ChannelInfo) -> Channel:
    return Channel(c.name, SENSOR if c.kind == fr.SENSOR else ACTUATOR, c.shape, c.lo, c.hi, c.units, c.safe, c.rate_hz)


class NnosSerialDevice(Device):
    reconnectable = True

    def __init__(self, name: str, port: str, expected: list[Channel] | None = None, baudrate: int = 1_000_000,
                 handshake_timeout: float = 2.0, heartbeat_s: float = 0.1, transport=None):
        super().__init__(name)
        self.port, self.expected, self.baudrate = port, expected, baudrate
        self.handshake_timeout, self.heartbeat_s = handshake_timeout, heartbeat_s
        self._transport = transport
        self.link: Link | None = None
        self.device_id = self.firmware = ""
        self.errors_from_device = 0
        self.clamped = 0
        self.last_error = ""
        self.last_rx = 0.0
        self._last_tx = 0.0
        self._ids: dict[int, str] = {}
        self._sizes: dict[int, int] = {}
        self._out_ids: dict[str, int] = {}
        if expected:
            # the board's declared channels exist before the first handshake: a loop can bind to
            # them (and fail safe on staleness) while the device is still unplugged
            self._set_channels(list(expected))
        self._pending: list = []

    # --- lifecycle ------------------------------------------------------------------------
    def retarget(self, path: str) -> None:
        self.port = path

    def open(self) -> None:
        t = self._transport or SerialTransport(self.port, self.baudrate, name=self.name)
        self.link = Link(t, self.name)
        try:
            self._handshake()
        except BaseException:
            t.close()
            self.link = None
            raise
        self.is_open = True

    def close(self) -> None:
        if self.link is not None:
            try:
                self.write_safe()
                self.flush()
            except HardwareError:
                pass
            self.link.t.close()
        self.link, self.is_open = None, False

    def _handshake(self) -> None:
        deadline = time.monotonic() + self.handshake_timeout
        next_hello = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_hello:       # the device may still be booting: repeat
                self.link.send(fr.FrameType.HELLO, fr.hello())
                next_hello = time.monotonic() + 0.25
            batch = self.link.poll(min(0.05, max(0.0, deadline - time.monotonic())))
            for i, f in enumerate(batch):
                if f.type == fr.FrameType.DESCRIBE:
                    self._accept(f.payload)
                    self._pending = batch[i + 1:]     # what came right behind it is data: keep it
                    return
                if f.type == fr.FrameType.ERROR:
                    code, msg = fr.parse_error(f.payload)
                    raise ProtocolError(self.name, f"device refused the handshake: error {code} {msg!r}")
        raise ProtocolError(self.name, f"no DESCRIBE from {self.port} within {self.handshake_timeout:.1f} s "
                            f"({self.link.stats.bytes_in} bytes received, {self.link.stats.faults()} faults): "
                            "is it an nnos protocol v1 device?")

    def _accept(self, payload: bytes) -> None:
        try:
            version, self.device_id, self.firmware, infos = fr.parse_describe(payload)
        except fr.FrameError as e:
            raise ProtocolError(self.name, f"malformed DESCRIBE: {e}") from e
        if version != fr.PROTOCOL_VERSION:
            self.link.send(fr.FrameType.ERROR, fr.error_payload(fr.ErrorCode.VERSION, "host speaks v1"))
            raise ProtocolError(self.name, f"device speaks protocol version {version}, expected {fr.PROTOCOL_VERSION}")
        described = [channel_from_info(c) for c in infos]
        if self.expected is not None:
            self._check(described)
            described = list(self.expected)          # the board's ranges and rules are the ones that hold
        self._set_channels(described)
        self._ids = {c.id: c.name for c in infos}
        self._sizes = {c.id: c.size for c in infos if c.kind == fr.SENSOR}
        self._route = {c.id: (self.channels[c.name], self.samples[c.name]) for c in infos if c.kind == fr.SENSOR}
        self._out_ids = {c.name: c.id for c in infos if c.kind == fr.ACTUATOR}
        self.link.reset_sequence()
        self.last_rx = time.monotonic()

    def _check(self, described: list[Channel]) -> None:
        have = {c.name: c for c in described}
        for want in self.expected:
            got = have.get(want.name)
            if got is None:
                raise ProtocolError(self.name, f"device {self.device_id!r} has no channel {want.name!r}; "
                                    f"it describes {sorted(have)}")
            if got.kind != want.kind or tuple(got.shape) != tuple(want.shape):
                raise ProtocolError(self.name, f"channel {want.name!r}: configured {want.kind} {list(want.shape)}, "
                                    f"device describes {got.kind} {list(got.shape)}")
        unknown = sorted(set(have) - {c.name for c in self.expected})
        if unknown:
            raise ProtocolError(self.name, f"device {self.device_id!r} describes channels {unknown} "
                                "that the board config does not know")

    # --- data -----------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        self._require_open()
        now = time.monotonic()
        if now - self._last_tx >= self.heartbeat_s:
            self.link.send(fr.FrameType.HEARTBEAT, fr.TS.pack(int(now * 1e6)), wait=False)
            self._last_tx = now
        new = 0
        frames, self._pending = self._pending + self.link.poll(0.0 if self._pending else timeout), []
        for f in frames:
            self.last_rx = time.monotonic()
            if f.type == fr.FrameType.SENSOR:
                new += self._sensor(f.payload)
            elif f.type == fr.FrameType.ERROR:
                self.errors_from_device += 1
                try:
                    code, msg = fr.parse_error(f.payload)
                    self.last_error = f"{code}: {msg}"
                except fr.FrameError:
                    self.last_error = "malformed ERROR frame"
        return new

    def _sensor(self, payload: bytes) -> int:
        try:
            ts, entries = fr.parse_values(payload, self._sizes)
        except fr.FrameError:
            self.link.stats.short_frames += 1
            return 0
        now = time.monotonic()
        for cid, off in entries:
            ch, s = self._route[cid]
            v = np.frombuffer(payload, "<f4", ch.size, off)
            np.copyto(s.values.reshape(-1), v)
            s.t_device_us, s.t_host = ts, now
            s.count += 1
            s.check(ch)
        return len(entries)

    def flush(self, ref_timestamp_us: int = 0) -> None:
        self._require_open()
        entries = [(self._out_ids[n], v) for n, v in self.commands.items()]
        self.link.send(fr.FrameType.ACTUATE, fr.values_payload(ref_timestamp_us, entries), wait=False)
        self._last_tx = time.monotonic()

    def write(self, channel: str, values) -> None:
        super().write(channel, values)
        ch = self.channels[channel]
        v = self.commands[channel]
        if _MIN(v, axis=None) < ch.lo or _MAX(v, axis=None) > ch.hi:   # never send what the device must refuse
            np.clip(v, ch.lo, ch.hi, out=v)
            self.clamped += 1

    def stats(self) -> dict:
        s = self.link.stats.as_dict() if self.link else {}
        s.update(errors_from_device=self.errors_from_device, last_error=self.last_error, clamped=self.clamped,
                 device_id=self.device_id, firmware=self.firmware)
        return s
