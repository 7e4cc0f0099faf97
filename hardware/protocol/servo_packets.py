"""What the Feetech and Dynamixel protocols share: a parser that finds each packet's header in
whatever bytes arrive (garbage before it counted and dropped, a partial header kept), and the
rows of a SYNC_WRITE. Each protocol says how a packet starting at a header is cut and checked."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ParserStats:
    packets: int = 0
    checksum_errors: int = 0     # a whole packet whose checksum (Feetech) or CRC-16 (Dynamixel) is wrong
    garbage_bytes: int = 0       # bytes that were no packet, dropped
    oversize: int = 0            # packets longer than the protocol allows, dropped


class HeaderParser:
    HEADER = b""

    def __init__(self):
        self.buf = bytearray()
        self.stats = ParserStats()

    def take(self):
        """At a header at the buffer's start: None (wait for more bytes), or (bytes to drop, the
        packet or None)."""
        raise NotImplementedError

    def feed(self, data: bytes) -> list:
        self.buf += data
        out = []
        while True:
            start = self.buf.find(self.HEADER)
            if start < 0:                   # keep what may be the start of a header
                keep = next((k for k in range(len(self.HEADER) - 1, 0, -1) if self.buf.endswith(self.HEADER[:k])), 0)
                self.stats.garbage_bytes += len(self.buf) - keep
                del self.buf[:len(self.buf) - keep]
                return out
            if start:
                self.stats.garbage_bytes += start
                del self.buf[:start]
            step = self.take()
            if step is None:
                return out
            drop, packet = step
            del self.buf[:drop]
            if packet is not None:
                self.stats.packets += 1
                out.append(packet)


def sync_write_rows(head: bytes, length: int, data: dict[int, bytes]) -> bytes:
    """A SYNC_WRITE's params: ``head`` (address and length), then each servo's id and data."""
    params = bytearray(head)
    for sid, d in data.items():
        if len(d) != length:
            raise ValueError(f"servo {sid}: {len(d)} bytes for a {length}-byte sync write")
        params += bytes((sid,)) + d
    return bytes(params)
