"""Consistent Overhead Byte Stuffing: a frame of any bytes becomes bytes without 0x00, so 0x00
can delimit frames and a receiver can resynchronise at the next 0x00 after any corruption.

Both directions work on whole zero-free runs (bytes.split / slicing), not byte by byte."""
from __future__ import annotations


class CobsError(ValueError):
    pass


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    for run in bytes(data).split(b"\x00"):
        while len(run) >= 254:                 # a full block: code 255, no implied zero after it
            out.append(255)
            out += run[:254]
            run = run[254:]
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    data = bytes(data)
    if b"\x00" in data:
        raise CobsError(f"zero byte inside an encoded frame at offset {data.index(0)}")
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            raise CobsError(f"block at offset {i} claims {code - 1} bytes, only {n - i - 1} remain")
        out += data[i + 1:end]
        i = end
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)
