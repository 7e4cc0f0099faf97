"""One heartbeat convention for every supervised process.

``RUN/heartbeat/<name>`` holds 8 bytes: the CLOCK_MONOTONIC nanoseconds of the process's last
sign of life, written through a shared mapping — a store to memory, no system call, so the
loop beats inside its tick. The supervisor's watchdog reads it (``read``) and restarts a
process whose beat is older than its declared period. Whoever vouches for a process beats for
it: the loop for itself, the broker for the legacy VM's guest (its last line).
"""
from __future__ import annotations

import mmap
import os
import struct
import time

_NS = struct.Struct("<q")


def path(run: str, name: str) -> str:
    return os.path.join(run, "heartbeat", name)


class Heartbeat:
    def __init__(self, run: str, name: str):
        p = path(run, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, _NS.size)
            self._map = mmap.mmap(fd, _NS.size)
        finally:
            os.close(fd)
        self._map[:] = bytes(_NS.size)          # no beat yet: a restarted process starts unarmed

    def beat(self, ns: int | None = None) -> None:
        _NS.pack_into(self._map, 0, time.monotonic_ns() if ns is None else ns)

    def close(self) -> None:
        self._map.close()


def read(run: str, name: str) -> int | None:
    """The last beat (monotonic ns), or None when there is none yet."""
    try:
        with open(path(run, name), "rb") as f:
            data = f.read(_NS.size)
    except OSError:
        return None
    if len(data) < _NS.size:
        return None
    return _NS.unpack(data)[0] or None
