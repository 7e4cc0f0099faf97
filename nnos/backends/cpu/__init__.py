"""The cpu backend: the whole plan as one generated C function (codegen.py, kernels.py),
compiled once into a cached shared object (toolchain.py) and called once per run through ctypes
with prebuilt pointers: the arena, the weight table, the workspace.

Inputs and outputs are views of the same arena layout as the numpy backend's, so everything
above the backend (the loop's bindings, the finite check) is unchanged.
"""
from __future__ import annotations

import ctypes
import time

import numpy as np

from ..numpy_backend import aligned_zeros, io_views
from .codegen import Unsupported, generate
from .toolchain import CompilerError, build, target

__all__ = ["CpuExecutable", "Unsupported", "CompilerError", "prepare", "source"]


def width() -> int:
    from ... import flags
    vw = flags.CPU_VECTOR.get() or target()[1]
    if vw not in (4, 8, 16):
        raise Unsupported(f"NNOS_CPU_VECTOR={vw}: expected 4, 8 or 16")
    return vw


def source(plan) -> str:
    """The generated C of ``plan`` on this machine."""
    return generate(plan, width())[0]


class CpuExecutable:
    backend = "cpu"

    def __init__(self, plan):
        t0 = time.perf_counter()
        src, prog = generate(plan, width())
        lib, facts = build(src)
        self.facts = dict(facts, vector_floats=prog.vw, compile_s=round(time.perf_counter() - t0, 3),
                          source_lines=src.count("\n"))
        g, mem = plan.graph, plan.memory
        self.arena = aligned_zeros(mem["arena_bytes"] + 64)
        self.workspace = aligned_zeros(max(prog.workspace, 64))
        self._consts = prog.consts                       # kept alive: the table points into them
        table = (ctypes.c_void_p * max(1, len(prog.consts)))(*[c.ctypes.data for c in prog.consts])
        self._table = table
        fn = lib.nnos_run
        fn.restype = None
        fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        self._lib, self._fn = lib, fn
        self._args = (self.arena.ctypes.data, ctypes.addressof(table), self.workspace.ctypes.data)

        def view(name):
            if name in g.consts:                 # an output the compiler folded to a constant
                return g.consts[name]
            t = g.types[name]
            off = mem["tensors"][name]
            return self.arena[off:off + t.nbytes].view(t.dtype).reshape(t.shape)
        self.inputs, self.outputs = io_views(g, view)

    def run(self) -> None:
        self._fn(*self._args)


def prepare(plan) -> CpuExecutable:
    return CpuExecutable(plan)


def check(plan) -> str | None:
    """Why the cpu backend cannot run ``plan`` here, or None (generation only: no compile)."""
    try:
        generate(plan, 4)
    except Unsupported as e:
        return str(e)
    return None


del np
