"""Frames of nnos serial protocol v1: what each frame type carries and how it is laid out.

A decoded frame is ``type u8 | seq u8 | payload | crc16 u16`` (little-endian), the CRC being
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF; check value 0x29B1 for "123456789") over type,
seq and payload. See hardware/PROTOCOL.md for the normative description.
"""
from __future__ import annotations

import binascii
import enum
import math
import struct
from dataclasses import dataclass, field

import numpy as np

PROTOCOL_VERSION = 1
MAX_FRAME = 1024            # decoded bytes, header and CRC included


class FrameType(enum.IntEnum):
    HELLO = 0x01
    DESCRIBE = 0x02
    SENSOR = 0x10
    ACTUATE = 0x20
    HEARTBEAT = 0x30
    ERROR = 0x7F


class ErrorCode(enum.IntEnum):
    BAD_CRC = 1
    UNKNOWN_TYPE = 2
    BAD_LENGTH = 3
    UNKNOWN_CHANNEL = 4
    OUT_OF_RANGE = 5
    VERSION = 6
    NOT_READY = 7


class FrameError(ValueError):
    """A frame that arrived whole but cannot be understood (counted, never raised to callers)."""


class CrcError(FrameError):
    pass


DTYPES = {1: np.dtype("<f4")}
SENSOR, ACTUATOR = 0, 1


@dataclass(frozen=True)
class ChannelInfo:
    """A channel as a device describes it in its DESCRIBE frame."""
    id: int
    name: str
    kind: int                  # SENSOR or ACTUATOR
    shape: tuple[int, ...]
    rate_hz: int
    lo: float
    hi: float
    safe: float = 0.0
    units: str = ""
    dtype: int = 1

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * DTYPES[self.dtype].itemsize


@dataclass
class Frame:
    """One frame of nnos serial v1: its type, sequence number and payload."""
    type: int
    seq: int
    payload: bytes = b""
    fields: dict = field(default_factory=dict)


def crc16(data) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(ftype: int, seq: int, payload: bytes) -> bytes:
    body = bytes((ftype, seq & 0xFF)) + payload
    return body + struct.pack("<H", crc16(body))


def decode_frame(raw: bytes) -> Frame:
    if len(raw) < 4:
        raise FrameError(f"frame of {len(raw)} bytes: shorter than header + CRC (4)")
    body, (crc,) = raw[:-2], struct.unpack_from("<H", raw, len(raw) - 2)
    if crc16(body) != crc:
        raise CrcError(f"CRC mismatch: frame says {crc:#06x}, computed {crc16(body):#06x}")
    return Frame(raw[0], raw[1], bytes(raw[2:-2]))


# --- strings and payloads -------------------------------------------------------------------
def put_str(s: str) -> bytes:
    b = s.encode()[:255]
    return bytes((len(b),)) + b


def get_str(buf: bytes, off: int) -> tuple[str, int]:
    if off >= len(buf) or off + 1 + buf[off] > len(buf):
        raise FrameError(f"string at offset {off} runs past the end of the payload")
    n = buf[off]
    try:
        return buf[off + 1:off + 1 + n].decode(), off + 1 + n
    except UnicodeDecodeError as e:
        raise FrameError(f"string at offset {off} is not UTF-8") from e


def hello(host: str = "nnos") -> bytes:
    return bytes((PROTOCOL_VERSION,)) + put_str(host)


def describe(device_id: str, firmware: str, channels: list[ChannelInfo], version: int = PROTOCOL_VERSION) -> bytes:
    out = bytearray((version,)) + put_str(device_id) + put_str(firmware) + bytes((len(channels),))
    for c in channels:
        out += struct.pack("<BBBB", c.id, c.kind, c.dtype, len(c.shape))
        out += struct.pack(f"<{len(c.shape)}H", *c.shape)
        out += struct.pack("<Hfff", c.rate_hz, c.lo, c.hi, c.safe)
        out += put_str(c.name) + put_str(c.units)
    return bytes(out)


def parse_describe(p: bytes) -> tuple[int, str, str, list[ChannelInfo]]:
    try:
        version = p[0]
        device_id, off = get_str(p, 1)
        firmware, off = get_str(p, off)
        n = p[off]
        off += 1
        chans = []
        for _ in range(n):
            cid, kind, dtype, ndim = struct.unpack_from("<BBBB", p, off)
            off += 4
            shape = struct.unpack_from(f"<{ndim}H", p, off)
            off += 2 * ndim
            rate, lo, hi, safe = struct.unpack_from("<Hfff", p, off)
            off += 14
            name, off = get_str(p, off)
            units, off = get_str(p, off)
            if dtype not in DTYPES or kind not in (SENSOR, ACTUATOR):
                raise FrameError(f"channel {name!r}: unknown dtype {dtype} or kind {kind}")
            chans.append(ChannelInfo(cid, name, kind, tuple(shape), rate, lo, hi, safe, units, dtype))
    except (IndexError, struct.error) as e:
        raise FrameError(f"DESCRIBE payload of {len(p)} bytes is truncated") from e
    if off != len(p):
        raise FrameError(f"DESCRIBE payload has {len(p) - off} trailing bytes")
    return version, device_id, firmware, chans


TS = struct.Struct("<Q")


def values_payload(timestamp_us: int, entries: list[tuple[int, np.ndarray]]) -> bytes:
    """SENSOR and ACTUATE payloads: a u64 timestamp, then (channel id u8, float32 values)..."""
    out = bytearray(TS.pack(timestamp_us))
    for cid, v in entries:
        out.append(cid)
        out += np.asarray(v, dtype="<f4").tobytes()
    return bytes(out)


def parse_values(p: bytes, sizes: dict[int, int]) -> tuple[int, list[tuple[int, int]]]:
    """Returns the timestamp and (channel id, byte offset of its values) pairs; checks lengths."""
    if len(p) < 8:
        raise FrameError(f"values payload of {len(p)} bytes has no timestamp")
    (ts,) = TS.unpack_from(p, 0)
    off, entries = 8, []
    while off < len(p):
        cid = p[off]
        if cid not in sizes:
            raise FrameError(f"unknown channel id {cid}")
        n = sizes[cid] * 4
        if off + 1 + n > len(p):
            raise FrameError(f"channel {cid}: {n} value bytes expected, {len(p) - off - 1} present")
        entries.append((cid, off + 1))
        off += 1 + n
    return ts, entries


def error_payload(code: int, message: str) -> bytes:
    return bytes((code,)) + put_str(message)


def parse_error(p: bytes) -> tuple[int, str]:
    if not p:
        raise FrameError("ERROR payload is empty")
    msg, _ = get_str(p, 1) if len(p) > 1 else ("", 1)
    return p[0], msg
