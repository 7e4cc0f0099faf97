"""Telemetry in shared memory: a ring of per-tick records and a block of counters, written by
the loop without locks or allocation and read by any process without slowing it down.

Each record has a sequence word (seqlock): the writer makes it odd, writes, makes it even.
A reader copies a record and keeps it only if the sequence was even and unchanged. The header
holds the index of the last complete record.
"""
from __future__ import annotations

import mmap
import os

import numpy as np

MAGIC = 0x4E4E4F5354454C31      # "NNOSTEL1"
MAX_IO = 16                       # inputs/outputs kept per tick (the first MAX_IO values)
MODES = {0: "idle", 1: "running", 2: "failsafe", 3: "probation", 4: "stopped"}
MODE = {v: k for k, v in MODES.items()}

RECORD = np.dtype([
    ("seq", "<u8"), ("tick", "<u8"), ("t_ns", "<u8"), ("lateness_ns", "<i8"),
    ("read_ns", "<u4"), ("compute_ns", "<u4"), ("write_ns", "<u4"), ("mode", "u1"), ("model", "u1"),
    ("n_in", "u1"), ("n_out", "u1"),
    ("inputs", "<f4", (MAX_IO,)), ("outputs", "<f4", (MAX_IO,)),
])
COUNTERS = ["ticks", "misses", "late_ticks", "failsafe_entries", "swaps", "rollbacks", "overruns",
            "heartbeat_ns", "started_ns", "rate_mhz", "period_ns", "budget_ns", "mode", "pid",
            "restarts", "shadow_ticks", "inferences", "late_inferences", "inference_ns", "accelerator_lost"]
HEADER = np.dtype([("magic", "<u8"), ("capacity", "<u8"), ("last", "<u8"),
                   ("counters", "<i8", (len(COUNTERS),)),
                   ("active", "S64"), ("previous", "S64"), ("candidate", "S64"), ("shadow", "S64"),
                   ("failsafe_reason", "S160"), ("shadow_mean", "<f4", (MAX_IO,)), ("shadow_max", "<f4", (MAX_IO,)),
                   ("backend", "S120"), ("last_failsafe_reason", "S160")])


def _open(path: str, size: int, create: bool) -> mmap.mmap:
    fd = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o644)
    try:
        if create:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size, prot=(mmap.PROT_READ | mmap.PROT_WRITE) if create else mmap.PROT_READ)
    finally:
        os.close(fd)


def read_header(path: str, dtype: np.dtype, magic: int, what: str) -> np.ndarray:
    """A ring file's header (a copy), checked for its magic number."""
    with open(path, "rb") as f:
        head = np.frombuffer(f.read(dtype.itemsize), dtype, 1, 0)
    if int(head["magic"][0]) != magic:
        raise ValueError(f"{path} is not an nnos {what}")
    return head


def _close(obj) -> None:
    """Drop every numpy view of ``obj.mm`` (a view left alive would keep the map open), then close it."""
    for name in list(vars(obj)):
        if isinstance(getattr(obj, name), np.ndarray):
            setattr(obj, name, None)
    try:
        obj.mm.close()
    except BufferError:
        pass


def _complete(ring: np.ndarray, first: int, last: int) -> np.ndarray:
    """The records of ticks first..last that are whole (seqlock even and unchanged, the right tick)."""
    ticks = np.arange(first, last + 1, dtype=np.uint64)
    idx = (ticks % len(ring)).astype(np.int64)
    seq1 = ring["seq"][idx].copy()
    rec = ring[idx].copy()
    ok = (seq1 == ring["seq"][idx]) & (seq1 % 2 == 0) & (rec["tick"] == ticks)
    return rec[ok]


class TelemetryWriter:
    def __init__(self, path: str, capacity: int = 4096):
        self.path, self.capacity = path, capacity
        self.mm = _open(path, HEADER.itemsize + capacity * RECORD.itemsize, create=True)
        self.h = np.frombuffer(self.mm, HEADER, 1, 0)
        self.ring = np.frombuffer(self.mm, RECORD, capacity, HEADER.itemsize)
        self.ring[:] = np.zeros(capacity, RECORD)
        self.h["capacity"] = capacity
        self.h["last"] = np.iinfo(np.uint64).max
        self.h["magic"] = MAGIC
        self.c = self.h["counters"][0]
        self.idx = {k: i for i, k in enumerate(COUNTERS)}
        # per-field views, so a tick writes through prebuilt arrays without allocating
        r = self.ring
        self._seq, self._tick, self._t, self._late = r["seq"], r["tick"], r["t_ns"], r["lateness_ns"]
        self._read, self._compute, self._write = r["read_ns"], r["compute_ns"], r["write_ns"]
        self._mode, self._model, self._in, self._out = r["mode"], r["model"], r["inputs"], r["outputs"]
        self._n_in, self._n_out = r["n_in"], r["n_out"]
        self._last = self.h["last"]
        self.shadow_mean, self.shadow_max = self.h["shadow_mean"][0], self.h["shadow_max"][0]

    def set(self, name: str, value: int) -> None:
        self.c[self.idx[name]] = value

    def add(self, name: str, n: int = 1) -> None:
        self.c[self.idx[name]] += n

    def text(self, field: str, value: str) -> None:
        self.h[field] = value.encode()[:HEADER.fields[field][0].itemsize]

    def record(self, tick, t_ns, late_ns, read_ns, compute_ns, write_ns, mode, model, inputs, outputs) -> None:
        i = tick % self.capacity
        seq = self._seq[i] + 1                      # odd: being written
        self._seq[i] = seq
        self._tick[i], self._t[i], self._late[i] = tick, t_ns, late_ns
        self._read[i], self._compute[i], self._write[i] = read_ns, compute_ns, write_ns
        self._mode[i], self._model[i] = mode, model
        n_in, n_out = min(inputs.size, MAX_IO), min(outputs.size, MAX_IO)
        self._in[i, :n_in] = inputs.reshape(-1)[:n_in]
        self._out[i, :n_out] = outputs.reshape(-1)[:n_out]
        self._n_in[i], self._n_out[i] = n_in, n_out
        self._seq[i] = seq + 1                      # even: complete
        self._last[0] = tick

    def close(self) -> None:
        self.set("mode", MODE["stopped"])
        _close(self)


class TelemetryReader:
    """Reads a writer's file from another process: never locks, never writes."""

    def __init__(self, path: str):
        size = os.path.getsize(path)
        self.mm = _open(path, size, create=False)
        self.h = np.frombuffer(self.mm, HEADER, 1, 0)
        if int(self.h["magic"][0]) != MAGIC:
            raise ValueError(f"{path} is not an nnos telemetry file")
        self.capacity = int(self.h["capacity"][0])
        self.ring = np.frombuffer(self.mm, RECORD, self.capacity, HEADER.itemsize)

    def counters(self) -> dict:
        c = self.h["counters"][0].copy()
        out = {k: int(c[i]) for i, k in enumerate(COUNTERS)}
        out["mode"] = MODES.get(out["mode"], "?")
        for f in ("active", "previous", "candidate", "shadow", "failsafe_reason", "backend", "last_failsafe_reason"):
            out[f] = bytes(self.h[f][0]).rstrip(b"\0").decode(errors="replace")
        return out

    def shadow_divergence(self) -> dict:
        return {"mean": self.h["shadow_mean"][0].copy().tolist(), "max": self.h["shadow_max"][0].copy().tolist()}

    def last_tick(self) -> int | None:
        last = int(self.h["last"][0])
        return None if last == np.iinfo(np.uint64).max else last

    def records(self, n: int) -> np.ndarray:
        """Up to the last ``n`` complete records, oldest first (torn ones are dropped)."""
        last = self.last_tick()
        if last is None:
            return np.zeros(0, RECORD)
        n = min(n, self.capacity - 1, last + 1)
        return _complete(self.ring, last - n + 1, last)

    def close(self) -> None:
        _close(self)


# --- every channel, every tick ------------------------------------------------------------------
CHANNEL_MAGIC = 0x4E4E4F5343484E31  # "NNOSCHN1"
CHANNEL_HEADER = np.dtype([("magic", "<u8"), ("capacity", "<u8"), ("last", "<u8"), ("n", "<u4"),
                           ("layout_len", "<u4"), ("layout", "S65536")])
MAX_CHANNEL_VALUES = 4096           # numbers a tick (a camera frame is not a channel here)


def _channel_record(n: int) -> np.dtype:
    return np.dtype([("seq", "<u8"), ("tick", "<u8"), ("t_ns", "<u8"), ("mode", "u1"), ("values", "<f4", (n,))])


class ChannelWriter:
    """Every board channel's values each tick (sensors as read, actuators as sent), float32,
    into a second shared-memory ring (RUN/channels) with the same seqlock as the tick records:
    what a recorder in another process turns into MCAP, off the loop's CPU. ``sources``: per
    channel (what it is: a dict with at least "topic", the live array); the layout (each dict
    with its offset and size) is JSON in the header."""

    def __init__(self, path: str, sources: list[tuple[dict, np.ndarray]], capacity: int = 4096, frames=()):
        """``frames``: nnos.frames.FrameWriter per camera channel, recorded with each tick."""
        import json
        self.frames = tuple(frames)
        self.sources = [s for s in sources if s[1].size <= MAX_CHANNEL_VALUES]
        n = sum(s[1].size for s in self.sources)
        self.stage = np.zeros(max(n, 1), np.float32)
        layout, off = [], 0
        self._copies = []
        for what, arr in self.sources:
            flat = arr.reshape(-1)
            self._copies.append((self.stage[off:off + flat.size], flat))
            layout.append(dict(what, offset=off, size=int(flat.size)))
            off += flat.size
        rec = _channel_record(max(n, 1))
        self.mm = _open(path, CHANNEL_HEADER.itemsize + capacity * rec.itemsize, create=True)
        self.h = np.frombuffer(self.mm, CHANNEL_HEADER, 1, 0)
        self.ring = np.frombuffer(self.mm, rec, capacity, CHANNEL_HEADER.itemsize)
        text = json.dumps(layout).encode()
        if len(text) > CHANNEL_HEADER.fields["layout"][0].itemsize:
            raise ValueError(f"the board's channel layout takes {len(text)} bytes of JSON; at most 65536")
        self.h["capacity"], self.h["n"], self.h["layout_len"], self.h["layout"] = capacity, n, len(text), text
        self.h["last"] = np.iinfo(np.uint64).max
        self.h["magic"] = CHANNEL_MAGIC
        self.capacity = capacity
        self._seq, self._tick, self._t = self.ring["seq"], self.ring["tick"], self.ring["t_ns"]
        self._mode, self._values, self._last = self.ring["mode"], self.ring["values"], self.h["last"]

    def record(self, tick: int, t_ns: int, mode: int) -> None:
        for dst, src in self._copies:
            np.copyto(dst, src, casting="unsafe")
        i = tick % self.capacity
        seq = self._seq[i] + 1
        self._seq[i] = seq
        self._tick[i], self._t[i], self._mode[i] = tick, t_ns, mode
        self._values[i] = self.stage
        self._seq[i] = seq + 1
        self._last[0] = tick
        for f in self.frames:
            f.record(tick)

    def close(self) -> None:
        for f in self.frames:
            f.close()
        _close(self)


class ChannelReader:
    def __init__(self, path: str):
        import json
        head = read_header(path, CHANNEL_HEADER, CHANNEL_MAGIC, "channel ring")
        n, self.capacity = int(head["n"][0]), int(head["capacity"][0])
        self.layout = json.loads(bytes(head["layout"][0])[:int(head["layout_len"][0])])
        rec = _channel_record(max(n, 1))
        self.mm = _open(path, CHANNEL_HEADER.itemsize + self.capacity * rec.itemsize, create=False)
        self.h = np.frombuffer(self.mm, CHANNEL_HEADER, 1, 0)
        self.ring = np.frombuffer(self.mm, rec, self.capacity, CHANNEL_HEADER.itemsize)

    def last_tick(self) -> int | None:
        last = int(self.h["last"][0])
        return None if last == np.iinfo(np.uint64).max else last

    def since(self, tick: int) -> np.ndarray:
        """Complete records after ``tick`` (-1: all kept), oldest first; torn ones dropped."""
        last = self.last_tick()
        if last is None or last <= tick:
            return np.zeros(0, self.ring.dtype)
        return _complete(self.ring, max(tick + 1, last - self.capacity + 2, 0), last)

    def close(self) -> None:
        _close(self)
