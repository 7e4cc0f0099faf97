"""The conversation on one half-duplex servo bus (Feetech STS/SCS or Dynamixel 2.0), above
the transport and below the bus device: send a request, gather the status packets of the servos
asked until they all came or a deadline sized from the bytes on the wire — never longer —
and count, per servo, what went wrong (answers missing, error bits by name), and on the bus
what arrived that nobody asked for (late answers, other ids, bad checksums)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ..errors import DeviceError
from ..transport import SerialTransport, set_latency_timer
from . import dynamixel as dx
from . import feetech as ft

PROTOCOLS = {"feetech": ft, "dynamixel": dx}


@dataclass
class ServoStats:
    missing: int = 0                    # transactions it did not answer
    errors: dict = field(default_factory=dict)     # error name → count
    clamped: int = 0                    # goals beyond its calibrated limits (counted by the device)


class ServoLink:
    def __init__(self, name: str, vendor: str, table, ids: list[int], baudrate: int, latency_s: float,
                 spin_s: float, fast_sync_read: bool, transport=None):
        if vendor not in PROTOCOLS:
            raise DeviceError(name, f"unknown servo bus {vendor!r}; expected one of {', '.join(PROTOCOLS)}")
        self.name, self.vendor, self.table, self.ids = name, vendor, table, list(ids)
        self.baudrate, self.latency_s, self.spin_s = baudrate, latency_s, spin_s
        self.proto, self.fast = PROTOCOLS[vendor], fast_sync_read and vendor == "dynamixel"
        self.parser = self.proto.Parser()
        self.stats = {sid: ServoStats() for sid in self.ids}
        self.lock = threading.Lock()            # one conversation on the wire at a time
        self.transport, self._given = transport, transport is not None
        self.port = ""
        self.late_bytes = 0                     # answers that came after their deadline (dropped)
        self.stray = 0                          # answers from ids nobody asked (a clashing or mis-set id)
        self.latency_note = ""
        pos = table["Present_Position"]
        read = dx.fast_sync_read if self.fast else self.proto.sync_read
        self._read_request = read(pos.address, pos.size, self.ids)      # the same bytes every tick

    def open(self, port: str) -> None:
        self.port = port
        if not self._given:
            self.latency_note = set_latency_timer(port)
            self.transport = SerialTransport(port, self.baudrate, name=self.name)

    def close(self) -> None:
        if self.transport is not None and not self._given:
            self.transport.close()
            self.transport = None

    @property
    def is_open(self) -> bool:
        return self.transport is not None

    def send(self, data: bytes) -> None:
        with self.lock:
            self.transport.write(data)

    # --- what goes on the wire --------------------------------------------------------------------
    def sync_write(self, register: str, values: dict[int, int]) -> bytes:
        r = self.table[register]
        return self.proto.sync_write(r.address, r.size, {sid: r.encode(v, self.table.endian) for sid, v in values.items()})

    def read_positions(self, before: bytes = b"") -> dict[int, bytes]:
        """``before`` (sync writes: no answer) and the read of every Present_Position, in one write;
        servos that did not answer are asked once more, each status separately."""
        pos = self.table["Present_Position"]
        want = set(self.ids)
        got = self.gather(before + self._read_request, want, length=pos.size)
        missing = want - set(got)
        if missing:
            got.update(self.gather(self.proto.sync_read(pos.address, pos.size, sorted(missing)), missing))
        for sid in want - set(got):
            self.stats[sid].missing += 1
        return got

    def read(self, sid: int, register: str) -> int:
        """One register of one servo — not on the tick's path: generous (a USB adapter's default
        latency timer is 16 ms), and asked up to three times."""
        r = self.table[register]
        got = {}
        for _ in range(3):
            with self.lock:
                got = self.gather(self.proto.read(sid, r.address, r.size), {sid}, slack_s=0.05)
            if sid in got:
                break
        if sid not in got:
            raise DeviceError(self.name, f"servo {sid} on {self.port} did not answer (is it powered, "
                              f"is its id {sid}, is the bus at {self.baudrate} baud?)")
        return r.decode(got[sid], self.table.endian)

    # --- gathering answers ------------------------------------------------------------------------
    def _deadline(self, n_bytes: int, slack_s: float) -> float:
        """Time for ``n_bytes`` at the baud rate (10 bits a byte), the adapter's latency, a margin."""
        return time.monotonic() + n_bytes * 10 / self.baudrate + self.latency_s + slack_s

    def gather(self, request: bytes, want: set[int], slack_s: float = 0.002, length: int = 0) -> dict[int, bytes]:
        """Send ``request``; the status packets of ``want`` until they all came or the deadline.
        Answers that arrived after an earlier deadline are dropped first, never taken for new ones.
        The first wait polls for ``spin_s`` before sleeping (the bus thread may spin)."""
        self.late_bytes += self.transport.drain()
        self.parser.buf.clear()
        self.transport.write(request)
        deadline = self._deadline(len(request) + len(want) * 16, slack_s)
        got: dict[int, bytes] = {}
        while want - set(got):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for p in self.parser.feed(self.transport.read_some(4096, left, self.spin_s)):
                rows = dx.fast_rows(p.params, length) if p.servo_id == dx.BROADCAST and self.fast else \
                    {p.servo_id: (p.error, p.data)}
                for sid, (error, data) in rows.items():
                    if sid not in want:
                        self.stray += 1
                        continue
                    self._note_error(sid, error)
                    got[sid] = data
        return got

    def _note_error(self, sid: int, error: int) -> None:
        if not error:
            return
        names = ft.errors(error) if self.vendor == "feetech" else [dx.describe_error(error)]
        for n in names:
            self.stats[sid].errors[n] = self.stats[sid].errors.get(n, 0) + 1
