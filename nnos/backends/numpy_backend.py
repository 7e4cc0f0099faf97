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

_limited = False


def limit_blas_threads():
    global _limited
    if not _limited:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=flags.BLAS_THREADS.get(), user_api="blas")
        _limited = True


def aligned_zeros(nbytes: int, align: int = 64) -> np.ndarray:
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


def io_views(graph, view) -> tuple[dict, dict]:
    """An executable's inputs (writable views) and outputs (read-only views) of its arena."""
    outputs = {}
    for name in graph.outputs:
        v = view(name).view()
        v.flags.writeable = False
        outputs[name] = v
    return {name: view(name) for name in graph.inputs}, outputs


class NumpyExecutable:
    backend = "numpy"

    def __init__(self, plan):
        limit_blas_threads()
        np.seterr(all="ignore")
        g, mem = plan.graph, plan.memory
        self.arena = aligned_zeros(mem["arena_bytes"])
        for one in mem["ones"]:      # constant 1.0 cells that bias_row Gemms read after their input
            dt = np.dtype(one["dtype"])
            self.arena[one["offset"]:one["offset"] + dt.itemsize].view(dt)[0] = 1

        consts = {}
        for name, c in g.consts.items():      # weights are read-only: bindings may precompute from them
            consts[name] = c.view()
            consts[name].flags.writeable = False

        def view(name):
            if name in consts:
                return consts[name]
            t = g.types[name]
            off = mem["tensors"][name]
            return self.arena[off:off + t.nbytes].view(t.dtype).reshape(t.shape)

        skip = set(mem["skip"])
        steps = []
        for s, node in enumerate(g.nodes):
            if s in skip:
                continue
            parts = step_scratch(g, node)
            slots = iter(mem["scratch"][s])
            arrays = []
            for part in parts:
                mine = []
                for t, _persistent in part:
                    off = next(slots)
                    mine.append(np.zeros(t.shape, t.dtype) if off is None else
                                self.arena[off:off + t.nbytes].view(t.dtype).reshape(t.shape))
                arrays.append(mine)
            ins = [view(i) if i else None for i in node.inputs]
            outs = [view(o) if o else None for o in node.outputs]
            steps.append(OPS[node.op].bind(node, ins, outs, arrays[0]))
            for e, scratch in zip(node.epilogue, arrays[1:]):
                e_ins = [view(i) if i else None for i in e.inputs_with(node.outputs[0])]
                steps.append(OPS[e.op].bind(e.as_node(node.name), e_ins, [outs[0]], scratch))
        self._steps = flatten(steps)
        self.inputs, self.outputs = io_views(g, view)

    def run(self) -> None:
        for step in self._steps:
            step()


def prepare(plan) -> NumpyExecutable:
    return NumpyExecutable(plan)
