"""Consistent Overhead Byte Stuffing: a frame of any bytes becomes bytes without 0x00, so 0x00
can delimit frames and a receiver can resynchronise at the next 0x00 after any corruption."""
from __future__ import annotations


class CobsError(ValueError):
    pass


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError(f"zero byte inside an encoded frame at offset {i}")
        end = i + code
        if end > n:
            raise CobsError(f"block at offset {i} claims {code - 1} bytes, only {n - i - 1} remain")
        block = data[i + 1:end]
        if 0 in block:
            raise CobsError(f"zero byte inside an encoded frame at offset {i + 1 + block.index(0)}")
        out += block
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)
