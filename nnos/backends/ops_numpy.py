"""The numpy backend, the reference: every step bound once to views of one preallocated arena.

A run is a loop over prebound callables; no step allocates an array. Numpy's floating-point
warnings are switched off process-wide when a plan is bound (a NaN is data for the supervisor
to check, not a warning to print from the hot path); BLAS is limited to the configured
number of threads (NNOS_BLAS_THREADS, default 1).
"""
from __future__ import annotations

import numpy as np

from .. import flags
from ..ops import OPS
from ..ops.registry import flatten
from ..schedule.lifetimes import step_scratch
from .base import Arena, Executable

_limited = False


def limit_blas_threads():
    global _limited
    if not _limited:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=flags.BLAS_THREADS.get(), user_api="blas")
        _limited = True


def _scratch(arena: Arena, graph, s: int, node) -> list[list[np.ndarray]]:
    """Step ``s``'s scratch arrays (head op first, then each epilogue op): arena views, or an
    array of their own for persistent scratch (kept across runs)."""
    slots = iter(arena.memory.scratch[s])
    parts = []
    for part in step_scratch(graph, node):
        mine = []
        for t, _persistent in part:
            off = next(slots)
            mine.append(np.zeros(t.shape, t.dtype) if off is None else arena.at(off, t))
        parts.append(mine)
    return parts


class NumpyExecutable(Executable):
    backend = "numpy"

    def __init__(self, plan):
        super().__init__(plan)
        limit_blas_threads()
        np.seterr(all="ignore")
        g = plan.graph
        self.arena = arena = Arena(plan)
        view = arena.view
        skip = set(plan.memory.skip)
        steps = []
        for s, node in enumerate(g.nodes):
            if s in skip:
                continue
            scratch = _scratch(arena, g, s, node)
            ins = [view(i) if i else None for i in node.inputs]
            outs = [view(o) if o else None for o in node.outputs]
            steps.append(OPS[node.op].bind(node, ins, outs, scratch[0]))
            for e, mine in zip(node.epilogue, scratch[1:]):
                e_ins = [view(i) if i else None for i in e.inputs_with(node.outputs[0])]
                steps.append(OPS[e.op].bind(e.as_node(node.name), e_ins, [outs[0]], mine))
        self._steps = flatten(steps)
        self.inputs, self.outputs = arena.io()

    def run(self) -> None:
        for step in self._steps:
            step()


def available() -> str | None:
    return None


def covers(plan) -> str | None:
    return None                     # the reference: every op the frontend accepts has a numpy binding


def prepare(plan) -> NumpyExecutable:
    return NumpyExecutable(plan)
