"""The memory planner: one pure function from buffer lifetimes to arena offsets.

Greedy by size (largest first), each buffer at the lowest aligned offset that does not overlap
a placed buffer whose lifetime overlaps its own — the approach of TFLite's and tinygrad's
planners. Returns offsets, the arena size, and the figures that say how well it did.
"""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64          # large buffers: a cache line
SMALL_ALIGN = 16    # buffers under SMALL bytes: 16 keeps SIMD loads whole without padding tiny tensors 4x
SMALL = 4096


@dataclass(frozen=True)
class Buffer:
    size: int    # bytes
    start: int   # first step that writes it (-1: before the first step)
    end: int     # last step that reads it


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def padded(size: int, align: int = ALIGN) -> int:
    """A buffer's footprint in the arena: its size rounded up to its alignment."""
    return _align(max(size, 1), SMALL_ALIGN if size < SMALL else align)


def lower_bound(buffers: list[Buffer], align: int = ALIGN) -> int:
    """Most (aligned) bytes live at any one step: no placement can use less."""
    if not buffers:
        return 0
    events = sorted({b.start for b in buffers})
    return max(sum(padded(b.size, align) for b in buffers if b.start <= t <= b.end) for t in events)


def place_buffers(buffers: list[Buffer], align: int = ALIGN) -> tuple[list[int], int, dict]:
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].start, i))
    placed: list[tuple[int, int, Buffer]] = []   # (offset, size, buffer)
    offsets = [0] * len(buffers)
    total = 0
    for i in order:
        b = buffers[i]
        size = padded(b.size, align)
        busy = sorted((o, s) for o, s, p in placed if p.start <= b.end and b.start <= p.end)
        step = SMALL_ALIGN if b.size < SMALL else align
        offset = 0
        for o, s in busy:
            if offset + size <= o:
                break
            offset = _align(max(offset, o + s), step)
        offsets[i] = offset
        placed.append((offset, size, b))
        total = max(total, offset + size)
    stats = {"arena_bytes": total, "naive_bytes": sum(b.size for b in buffers),
             "lower_bound_bytes": lower_bound(buffers, align)}
    return offsets, total, stats
