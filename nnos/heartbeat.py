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


class Reader:
    """The watcher's side: the beat file mapped once, read from memory like the writer writes it.
    (Read with read(2), a tmpfs file whose page a writer's mapping held a beat was seen to read
    back as zeros now and then in a qemu TCG guest: killing a healthy loop. Both sides map it.)"""

    def __init__(self, run: str, name: str):
        self.path = path(run, name)
        self._map: mmap.mmap | None = None

    def read(self) -> int | None:
        """The last beat (monotonic ns), or None when there is none yet."""
        if self._map is None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return None
            try:
                if os.fstat(fd).st_size < _NS.size:
                    return None
                self._map = mmap.mmap(fd, _NS.size, prot=mmap.PROT_READ)
            except (OSError, ValueError):
                return None
            finally:
                os.close(fd)
        return _NS.unpack_from(self._map, 0)[0] or None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


def read(run: str, name: str) -> int | None:
    """The last beat (monotonic ns), or None when there is none yet (once; a watcher keeps a Reader)."""
    r = Reader(run, name)
    try:
        return r.read()
    finally:
        r.close()
