"""Camera frames in shared memory for recordings: one small ring per camera channel
(RUN/frames-<device>-<channel>), a few slots of raw uint8 [H, W, 3] frames, written by the loop
only when its camera gave a new frame (a copy: ~0.1 ms for 640×480) and read by a recorder
in another process, which compresses them there (JPEG), off the loop's CPU.

The same seqlock as the tick rings: a slot's sequence word is odd while it is written; a
reader keeps a copy only if the word was even and unchanged around it.
"""
from __future__ import annotations

import json

import numpy as np

from .telemetry import _close, _open, read_header

FRAME_MAGIC = 0x4E4E4F5346524D31      # "NNOSFRM1"
SLOTS = 4
HEADER = np.dtype([("magic", "<u8"), ("slots", "<u8"), ("last", "<u8"), ("shape", "<u4", (3,)),
                   ("meta_len", "<u4"), ("meta", "S4096")])
NONE = np.iinfo(np.uint64).max


def _slot(shape) -> np.dtype:
    return np.dtype([("seq", "<u8"), ("number", "<u8"), ("tick", "<u8"), ("t_ns", "<u8"), ("data", "u1", tuple(shape))])


class FrameWriter:
    """``record(tick)``: the sample's frame into the next slot, if it is a new one."""

    def __init__(self, path: str, what: dict, sample, slots: int = SLOTS):
        self.sample, self.done = sample, sample.count
        shape = sample.values.shape
        self.mm = _open(path, HEADER.itemsize + slots * _slot(shape).itemsize, create=True)
        self.h = np.frombuffer(self.mm, HEADER, 1, 0)
        self.ring = np.frombuffer(self.mm, _slot(shape), slots, HEADER.itemsize)
        meta = json.dumps(what).encode()
        self.h["slots"], self.h["shape"], self.h["meta_len"], self.h["meta"] = slots, shape, len(meta), meta
        self.h["last"] = NONE
        self.h["magic"] = FRAME_MAGIC
        self.slots, self.written = slots, 0
        self._seq, self._data = self.ring["seq"], self.ring["data"]

    def record(self, tick: int) -> None:
        s = self.sample
        if s.count == self.done:
            return
        self.done = s.count
        i = self.written % self.slots
        seq = self._seq[i] + 1
        self._seq[i] = seq
        self.ring["number"][i], self.ring["tick"][i], self.ring["t_ns"][i] = self.written, tick, int(s.t_host * 1e9)
        np.copyto(self._data[i], s.values)
        self._seq[i] = seq + 1
        self.h["last"][0] = self.written
        self.written += 1

    def close(self) -> None:
        _close(self)


class FrameReader:
    def __init__(self, path: str):
        head = read_header(path, HEADER, FRAME_MAGIC, "frame ring")
        self.slots, shape = int(head["slots"][0]), tuple(int(x) for x in head["shape"][0])
        self.meta = json.loads(bytes(head["meta"][0])[:int(head["meta_len"][0])])
        self.mm = _open(path, HEADER.itemsize + self.slots * _slot(shape).itemsize, create=False)
        self.h = np.frombuffer(self.mm, HEADER, 1, 0)
        self.ring = np.frombuffer(self.mm, _slot(shape), self.slots, HEADER.itemsize)
        self.missed = 0                           # frames overwritten before this reader got them

    def last(self) -> int | None:
        n = int(self.h["last"][0])
        return None if n == NONE else n

    def since(self, number: int) -> list[tuple[int, int, int, np.ndarray]]:
        """Frames after ``number`` (-1: all kept) still in the ring, oldest first, as
        (number, tick, t_ns, a copy of the frame); a slot torn by the writer is dropped."""
        last = self.last()
        if last is None or last <= number:
            return []
        out, first = [], max(number + 1, last - self.slots + 1)
        if number >= 0:
            self.missed += first - (number + 1)
        for n in range(first, last + 1):
            i = n % self.slots
            before = int(self.ring["seq"][i])
            rec = self.ring[i].copy()
            if before % 2 == 0 and int(self.ring["seq"][i]) == before and int(rec["number"]) == n:
                out.append((n, int(rec["tick"]), int(rec["t_ns"]), rec["data"]))
            else:
                self.missed += 1
        return out

    def close(self) -> None:
        _close(self)
