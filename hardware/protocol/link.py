"""A framed link over a byte transport: COBS framing with 0x00 delimiters, CRC, sequence
numbers and fault counters.

The receive side never holds more than MAX_FRAME encoded bytes (an overlong run is dropped up
to the next delimiter and counted), never handles more than ``max_bytes`` per poll (a flood
cannot starve the caller) and never blocks longer than the timeout it is given.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .cobs import CobsError, cobs_decode, cobs_encode
from .frames import MAX_FRAME, CrcError, Frame, FrameError, FrameType, decode_frame, encode_frame

MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 2


@dataclass
class LinkStats:
    """A link's counters: frames and bytes each way, and what was dropped or lost."""
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    short_frames: int = 0
    oversize: int = 0          # runs longer than a frame can be, dropped to the next delimiter
    unknown_type: int = 0
    seq_gaps: int = 0          # frames the peer sent that never arrived (from sequence numbers)
    garbage_bytes: int = 0     # bytes thrown away by any of the above
    tx_dropped: int = 0        # frames we could not hand to a device that stopped reading

    def faults(self) -> int:
        return self.crc_errors + self.cobs_errors + self.short_frames + self.oversize + self.unknown_type

    def as_dict(self) -> dict:
        return asdict(self)


class Link:
    def __init__(self, transport, name: str = "link", max_bytes: int = 65536):
        self.t, self.name, self.max_bytes = transport, name, max_bytes
        self.stats = LinkStats()
        self._buf = bytearray()
        self._dropping = False
        self._tx_seq = 0
        self._rx_seq: int | None = None

    # --- sending -----------------------------------------------------------------------------
    def send(self, ftype: int, payload: bytes = b"", wait: bool = True) -> None:
        """``wait=False``: never block (a frame the device cannot take now is queued, and
        dropped if the queue overflows): what a fixed-rate loop needs."""
        data = cobs_encode(encode_frame(ftype, self._tx_seq, payload)) + b"\x00"
        self._tx_seq = (self._tx_seq + 1) & 0xFF
        if not wait and hasattr(self.t, "write_nowait"):
            if not self.t.write_nowait(data):
                self.stats.tx_dropped += 1
        else:
            self.t.write(data)
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)

    # --- receiving ---------------------------------------------------------------------------
    def poll(self, timeout: float, max_frames: int = 64) -> list[Frame]:
        """Frames that arrive within ``timeout`` seconds (returns as soon as one does)."""
        deadline = time.monotonic() + max(0.0, timeout)
        frames: list[Frame] = []
        budget = self.max_bytes
        while budget > 0 and len(frames) < max_frames:
            chunk = self.t.read_some(min(budget, 4096), max(0.0, deadline - time.monotonic()))
            if not chunk:
                break
            budget -= len(chunk)
            self.stats.bytes_in += len(chunk)
            self._feed(chunk, frames)
            if frames and not self.t.pending():
                break
        return frames

    def _feed(self, chunk: bytes, frames: list) -> None:
        start = 0
        while True:
            end = chunk.find(b"\x00", start)
            part = chunk[start:] if end < 0 else chunk[start:end]
            if not self._dropping:
                if len(self._buf) + len(part) > MAX_ENCODED:
                    self.stats.oversize += 1
                    self.stats.garbage_bytes += len(self._buf) + len(part)
                    self._buf.clear()
                    self._dropping = True
                else:
                    self._buf += part
            else:
                self.stats.garbage_bytes += len(part)
            if end < 0:
                return
            if not self._dropping and self._buf:
                frame = self._decode(bytes(self._buf))
                if frame is not None:
                    frames.append(frame)
            self._buf.clear()
            self._dropping = False
            start = end + 1

    def _decode(self, encoded: bytes) -> Frame | None:
        try:
            frame = decode_frame(cobs_decode(encoded))
        except (CobsError, FrameError) as e:
            counter = ("cobs_errors" if isinstance(e, CobsError) else
                       "crc_errors" if isinstance(e, CrcError) else "short_frames")
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
            self.stats.garbage_bytes += len(encoded)
            return None
        if frame.type not in FrameType._value2member_map_:
            self.stats.unknown_type += 1
            return None
        if self._rx_seq is not None:
            self.stats.seq_gaps += (frame.seq - self._rx_seq - 1) & 0xFF
        self._rx_seq = frame.seq
        self.stats.frames_in += 1
        return frame

    def reset_sequence(self) -> None:
        self._rx_seq = None
