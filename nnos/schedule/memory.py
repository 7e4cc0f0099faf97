"""The memory plan: alias groups and scratch become buffers; buffers get arena offsets.

Greedy by size (largest first), each buffer at the lowest aligned offset that does not overlap
a placed buffer whose lifetime overlaps its own — the approach of TFLite's and tinygrad's
planners. Returns offsets, the arena size, and the figures that say how well it did.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..ir import Graph
from .lifetimes import lifetimes, alias_groups, step_scratch

ALIGN = 64          # every buffer starts on a cache line: a vector load of it is one line, not two
#                     (16-byte starts for buffers under 4 KB cost an int8 transformer's 64-byte loads
#                     a second line; padding its tiny tensors to 64 grew act_s's arena by 32 bytes)


@dataclass(frozen=True)
class Buffer:
    """A buffer's size in bytes and the steps between which it is live."""
    size: int    # bytes
    start: int   # first step that writes it (-1: before the first step)
    end: int     # last step that reads it


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def padded(size: int, align: int = ALIGN) -> int:
    """A buffer's footprint in the arena: its size rounded up to its alignment."""
    return _align(max(size, 1), align)


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
        offset = 0
        for o, s in busy:
            if offset + size <= o:
                break
            offset = _align(max(offset, o + s), align)
        offsets[i] = offset
        placed.append((offset, size, b))
        total = max(total, offset + size)
    stats = {"arena_bytes": total, "naive_bytes": sum(b.size for b in buffers),
             "lower_bound_bytes": lower_bound(buffers, align)}
    return offsets, total, stats


@dataclass
class MemoryPlan:
    """Where every tensor and scratch array lives in the arena, and how good the layout is."""
    tensors: dict[str, int]                 # tensor → arena offset (aliases share one)
    scratch: list[list[int | None]]         # per step: arena offset of each scratch array (None: kept outside)
    skip: list[int]                         # view steps that run as nothing (their tensors alias)
    workspace_bytes: int                    # persistent scratch outside the arena
    arena_bytes: int
    naive_bytes: int                        # every tensor and scratch array in its own buffer
    lower_bound_bytes: int                  # most bytes live at once: no layout can use less

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "MemoryPlan":
        """From a plan file's header (KeyError/TypeError/ValueError on a malformed one)."""
        return cls(tensors={str(k): int(v) for k, v in d["tensors"].items()},
                   scratch=[[None if o is None else int(o) for o in step] for step in d["scratch"]],
                   skip=[int(s) for s in d["skip"]], workspace_bytes=int(d["workspace_bytes"]),
                   arena_bytes=int(d["arena_bytes"]), naive_bytes=int(d["naive_bytes"]),
                   lower_bound_bytes=int(d["lower_bound_bytes"]))


def _tensor_buffers(graph: Graph, groups, define, last) -> tuple[list[Buffer], list[list[str]]]:
    """One buffer per alias group, as large as its largest member, live from its first write to
    its last read — a graph input's for the whole run: the caller may write only what changed
    (a camera frame when a new one came), so no step may reuse its bytes."""
    buffers, members_of = [], []
    inputs = set(graph.inputs)
    for members in groups.roots().values():
        size = max(graph.type_of(m).nbytes for m in members)
        start = min(define[m] for m in members)
        end = max(last.get(m, define[m]) for m in members)
        if inputs.intersection(members):
            end = len(graph.nodes)
        buffers.append(Buffer(size, start, end))
        members_of.append(members)
    return buffers, members_of


def _scratch_buffers(graph: Graph, first: int) -> tuple[list[Buffer], list[list[int | None]], int]:
    """Each step's scratch arrays, live for that step only (numbered from ``first``); persistent
    scratch (zero borders kept across runs) goes to the workspace instead."""
    buffers, slots, workspace = [], [], 0
    for s, node in enumerate(graph.nodes):
        mine = []
        for t, persistent in (x for part in step_scratch(graph, node) for x in part):
            if persistent:
                workspace += t.nbytes
                mine.append(None)
            else:
                mine.append(first + len(buffers))
                buffers.append(Buffer(t.nbytes, s, s))
        slots.append(mine)
    return buffers, slots, workspace


def memory_plan(graph: Graph) -> MemoryPlan:
    """Lifetimes → alias groups → buffers (tensors, scratch) → placement."""
    define, last = lifetimes(graph)
    groups, skip = alias_groups(graph, define, last)
    tensor_bufs, members_of = _tensor_buffers(graph, groups, define, last)
    scratch_bufs, slots, workspace = _scratch_buffers(graph, len(tensor_bufs))
    offsets, total, stats = place_buffers(tensor_bufs + scratch_bufs)
    tensors = {m: off for members, off in zip(members_of, offsets) for m in members}
    naive = sum(graph.type_of(t).nbytes for t in define) + sum(b.size for b in scratch_bufs)
    return MemoryPlan(tensors=tensors, scratch=[[None if b is None else offsets[b] for b in step] for step in slots],
                      skip=skip, workspace_bytes=workspace, arena_bytes=total, naive_bytes=naive,
                      lower_bound_bytes=stats["lower_bound_bytes"])
