"""What every backend is: an ``Executable`` over one arena laid out by the plan's memory plan.

A backend module (``ops_<name>.py`` beside this file) holds three things:

    available() -> str | None        why it cannot run here at all (no compiler, no device), or None
    covers(plan) -> str | None       why it cannot run this plan (an op it lacks), or None
    prepare(plan) -> Executable      bound and ready: write ``inputs``, call ``run()``, read ``outputs``

and raises ``BackendError`` (saying what was expected and what it found) when it cannot.
"""
from __future__ import annotations

import numpy as np

from ..ir import aligned_empty


def aligned_zeros(nbytes: int) -> np.ndarray:
    out = aligned_empty(nbytes, np.uint8)
    out[:] = 0
    return out


class Arena:
    """One aligned byte buffer holding every intermediate tensor at its planned offset; weights
    stay in the plan (read-only views)."""

    def __init__(self, plan, extra: int = 0):
        self.graph, self.memory = plan.graph, plan.memory
        self.buf = aligned_zeros(self.memory.arena_bytes + extra)
        self.consts = {}
        for name, c in self.graph.consts.items():     # bindings may precompute from weights; never write them
            self.consts[name] = c.view()
            self.consts[name].flags.writeable = False

    @property
    def address(self) -> int:
        return self.buf.ctypes.data

    def view(self, name: str) -> np.ndarray:
        """The tensor ``name``: a constant's read-only view or a typed view into the arena."""
        if name in self.consts:
            return self.consts[name]
        t = self.graph.types[name]
        off = self.memory.tensors[name]
        return self.buf[off:off + t.nbytes].view(t.dtype).reshape(t.shape)

    def at(self, offset: int, t) -> np.ndarray:
        return self.buf[offset:offset + t.nbytes].view(t.dtype).reshape(t.shape)

    def io(self) -> tuple[dict, dict]:
        """The graph's inputs (writable views) and outputs (read-only views)."""
        outputs = {}
        for name in self.graph.outputs:
            v = self.view(name).view()
            v.flags.writeable = False
            outputs[name] = v
        return {name: self.view(name) for name in self.graph.inputs}, outputs


class Executable:
    """A plan bound to a backend. ``choice`` says which backend was asked for and why the ones
    before it were passed over (set by ``backends.prepare``); ``facts`` are the backend's own
    (a compiled object's path, its target, whether it came from a cache)."""

    backend = "?"

    def __init__(self, plan):
        self.plan = plan
        self.inputs: dict[str, np.ndarray] = {}      # write the next run's inputs here
        self.outputs: dict[str, np.ndarray] = {}     # read after run(); overwritten by the next run()
        self.facts: dict = {}
        self.choice: dict = {"backend": self.backend, "asked": self.backend, "passed_over": {}}

    def run(self) -> None:
        raise NotImplementedError
