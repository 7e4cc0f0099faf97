"""nnos.Lookup: a function of one value on an 8-bit grid, as a table (passes/lookup.py makes it).

    y = table[clip(round_half_even(x / scale), lo, lo + len(table) − 1) − lo]      (NaN → lo)

``x`` float32, ``scale`` one float32 constant, ``table`` a 1-D float32 constant; ``lo`` an integer
attribute. When every value of ``x`` is k·scale for an integer k in the table's range (a
DequantizeLinear's or a rounding's output), x / scale rounds back to k exactly, and y is the
table's entry for that value: the pass computed each entry by running the reference on it.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import call, register

LOOKUP = "nnos.Lookup"
F32 = np.dtype(np.float32)


def _infer(node, in_types, consts):
    if len(in_types) != 3 or any(t is None for t in in_types):
        raise node.fail(f"{LOOKUP} takes x, a scale and a table, got {len(in_types)} inputs")
    x, scale, table = in_types
    if consts[1] is None or consts[2] is None:
        raise node.fail(f"{LOOKUP} takes a constant scale and table")
    if x.dtype != F32 or scale.dtype != F32 or table.dtype != F32:
        raise node.fail(f"{LOOKUP} takes float32 x, scale and table, got {x}, {scale} and {table}")
    if scale.size != 1 or len(table.shape) != 1 or not 1 <= table.size <= 65536:
        raise node.fail(f"{LOOKUP} takes one scale and a table of 1 to 65536 entries, got {scale} and {table}")
    if not isinstance(node.attrs.get("lo"), int) or abs(node.attrs["lo"]) > 65536:
        raise node.fail(f"{LOOKUP} takes an integer attribute lo (the table's first grid index), "
                        f"got {node.attrs.get('lo')!r}")
    return [TensorType(F32, x.shape)]


def _scratch(node, in_types, out_types):
    return [(in_types[0], False), (TensorType(np.dtype(np.int32), in_types[0].shape), False)]


def _bind(node, ins, outs, scratch):
    x, scale, table = ins[0], ins[1].reshape(()), ins[2]
    t, k = scratch
    lo = np.array(node.attrs["lo"], np.float32)
    hi = np.array(node.attrs["lo"] + table.size - 1, np.float32)
    return [call(np.divide, x, scale, out=t), call(np.rint, t, out=t),
            call(np.fmax, t, lo, out=t), call(np.fmin, t, hi, out=t),          # NaN → lo
            call(np.subtract, t, lo, out=k, casting="unsafe"),
            call(np.take, table, k.reshape(-1), out=outs[0].reshape(-1), mode="clip")]     # clip: unbuffered


register(LOOKUP, _infer, _bind, scratch=_scratch, flops=lambda n, i, o: 4 * o[0].size, elementwise=True)
