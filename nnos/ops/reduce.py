"""ReduceSum, ReduceMean, ReduceMax, ReduceMin over constant axes (attribute, or input since opsets 13/18)."""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import call, register, scalar


def _axes(node, in_types, consts):
    rank = len(in_types[0].shape)
    if len(in_types) > 1 and in_types[1] is not None:
        if consts[1] is None:
            raise node.fail("axes (input 1) must be a constant known at compile time")
        axes = [int(a) for a in np.asarray(consts[1]).reshape(-1)]
    else:
        axes = [int(a) for a in node.attrs.get("axes", [])]
    if not axes:
        return None if int(node.attrs.get("noop_with_empty_axes", 0)) else tuple(range(rank))
    for a in axes:
        if not -rank <= a < rank:
            raise node.fail(f"axis {a} is out of range for rank {rank}")
    return tuple(sorted({a % rank for a in axes}))


def _infer_reduce(node, in_types, consts):
    x = in_types[0]
    axes = _axes(node, in_types, consts)
    if axes is None:
        return [x]
    keep = int(node.attrs.get("keepdims", 1))
    shape = tuple((1 if i in axes else s) for i, s in enumerate(x.shape) if keep or i not in axes)
    return [TensorType(x.dtype, shape)]


def _bind_reduce(node, ins, outs, scratch):
    x, y = ins[0], outs[0]
    axes = _axes(node, [x] + ins[1:], ins)   # arrays stand in for types: only .shape is read
    if axes is None:
        return call(np.copyto, y, x)
    kept = y.reshape(tuple(1 if i in axes else s for i, s in enumerate(x.shape)))
    ufunc = {"ReduceMax": np.maximum, "ReduceMin": np.minimum}.get(node.op, np.add)
    inv = scalar(1.0 / max(1, int(np.prod([x.shape[a] for a in axes]))), y.dtype) if node.op == "ReduceMean" else None

    if x.size == 0:   # reducing nothing gives the identity: 0 for sums, the lowest value for max
        low = (False if y.dtype == np.bool_ else -np.inf if y.dtype.kind == "f" else np.iinfo(y.dtype).min)
        high = (True if y.dtype == np.bool_ else np.inf if y.dtype.kind == "f" else np.iinfo(y.dtype).max)
        ident = scalar({"ReduceMax": low, "ReduceMin": high}.get(node.op, 0), y.dtype)
        return call(np.copyto, y, ident)
    program = [call(ufunc.reduce, x, axis=axes, keepdims=True, out=kept)]
    if inv is not None:
        program.append(call(np.multiply, kept, inv, kept))
    return program


for _name in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"):
    register(_name, _infer_reduce, _bind_reduce, flops=lambda n, i, o: i[0].size, const_inputs=(1,))
