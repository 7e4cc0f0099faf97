"""The numpy backend, the reference: every step bound once to views of one preallocated arena.

A run is a loop over prebound callables; no step allocates an array. Numpy's floating-point
warnings are switched off process-wide when a plan is bound (a NaN is data for the supervisor
to check, not a warning to print from the hot path); BLAS is limited to the configured
number of threads (NNOS_BLAS_THREADS, default 1).
"""
from __future__ import annotations

import numpy as np

from .. import flags
from ..ir import contiguous
from ..ops import OPS
from ..ops.linalg import product
from ..ops.registry import flatten
from ..schedule.lifetimes import alias_groups, lifetimes, step_scratch
from .base import Arena, Executable, aligned_zeros

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


def _bias_rows(graph) -> dict[str, tuple[np.ndarray, str]]:
    """This backend's own trick for a batch-1 Gemm with constant weights and bias (the common
    layer of a small policy): its input lives in a private buffer one element longer, that
    element 1.0, and the bias is the weights' last row — one BLAS call instead of two. Only for
    an input no other tensor aliases (views and in-place results share its bytes otherwise).
    Returns input name → (the weights with the bias row, the Gemm's node name)."""
    groups, _ = alias_groups(graph, *lifetimes(graph))
    out = {}
    for node in graph.nodes:
        if node.op != "Gemm" or node.attrs or len(node.inputs) != 3:
            continue
        a, w, c = node.inputs
        wv, cv = graph.consts.get(w), graph.consts.get(c)
        at = graph.type_of(a)
        if (a in graph.consts or a in out or wv is None or cv is None or len(at.shape) != 2 or at.shape[0] != 1
                or cv.size != wv.shape[1] or wv.dtype != at.dtype or groups.members(a) != [a] or a in graph.outputs):
            continue
        out[a] = (contiguous(np.vstack([wv, cv.reshape(1, -1).astype(wv.dtype)])), node.name)
    return out


class NumpyExecutable(Executable):
    backend = "numpy"

    def __init__(self, plan):
        super().__init__(plan)
        limit_blas_threads()
        np.seterr(all="ignore")
        g = plan.graph
        self.arena = arena = Arena(plan)
        rows = _bias_rows(g)
        ext = {}                                      # input → its private buffer with a trailing 1.0
        for a in rows:
            t = g.type_of(a)
            ext[a] = aligned_zeros((t.shape[1] + 1) * t.dtype.itemsize).view(t.dtype).reshape(1, t.shape[1] + 1)
            ext[a][0, -1] = 1

        def view(name):
            return ext[name][:, :-1] if name in ext else arena.view(name)
        skip = set(plan.memory.skip)
        steps = []
        for s, node in enumerate(g.nodes):
            if s in skip:
                continue
            scratch = _scratch(arena, g, s, node)
            ins = [view(i) if i else None for i in node.inputs]
            outs = [view(o) if o else None for o in node.outputs]
            a = node.inputs[0] if node.inputs else ""
            if a in rows and rows[a][1] == node.name:
                steps.append(product(ext[a], rows[a][0], outs[0]))
            else:
                steps.append(OPS[node.op].bind(node, ins, outs, scratch[0]))
            for e, mine in zip(node.epilogue, scratch[1:]):
                e_ins = [view(i) if i else None for i in e.inputs_with(node.outputs[0])]
                steps.append(OPS[e.op].bind(e.as_node(node.name), e_ins, [outs[0]], mine))
        self._steps = flatten(steps)
        self.inputs, self.outputs = arena.io()
        for name in self.inputs:                      # a graph input that feeds a bias-row Gemm
            if name in ext:
                self.inputs[name] = view(name)

    def run(self) -> None:
        for step in self._steps:
            step()


def available() -> str | None:
    return None


def covers(plan) -> str | None:
    return None                     # the reference: every op the frontend accepts has a numpy binding


def prepare(plan) -> NumpyExecutable:
    return NumpyExecutable(plan)
