"""Trilu (a causal mask's triangle) and CumSum (running sums along an axis): ops that read
each element's position, in the reference and, through backends/cpu/scan.py, compiled.
Both need their second input (k, the axis) as a constant."""
from __future__ import annotations

import numpy as np

from .registry import call, register, scalar


def _k(node, consts) -> int:
    k = consts[1] if len(consts) > 1 else None
    if k is not None and np.asarray(k).size != 1:
        raise node.fail(f"k must be a scalar, got shape {list(np.asarray(k).shape)}")
    return int(np.asarray(k).reshape(-1)[0]) if k is not None else 0


def _infer_trilu(node, in_types, consts):
    if len(in_types[0].shape) < 2:
        raise node.fail(f"input must have rank ≥ 2, got {in_types[0]}")
    _k(node, consts)
    return [in_types[0]]


def trilu_keep(node, shape, k_const) -> np.ndarray:
    """Which of the last two axes' positions Trilu keeps: bool [N, M]."""
    n, m = shape[-2:]
    d = np.arange(m)[None, :] - np.arange(n)[:, None]
    k = int(np.asarray(k_const).reshape(-1)[0]) if k_const is not None else 0
    return d >= k if int(node.attrs.get("upper", 1)) else d <= k


def _bind_trilu(node, ins, outs, scratch):
    x, y = ins[0], outs[0]
    drop = ~trilu_keep(node, x.shape, ins[1] if len(ins) > 1 else None)
    return [call(np.copyto, y, x), call(np.copyto, y, scalar(0, y.dtype), where=drop)]


def cumsum_axis(node, rank: int, axis_const) -> int:
    a = np.asarray(axis_const)
    if a.size != 1 or a.dtype.kind not in "iu":
        raise node.fail(f"axis must be one integer, got {a.tolist()!r}")
    axis = int(a.reshape(-1)[0])
    if not -rank <= axis < rank:
        raise node.fail(f"axis {axis} is outside a rank-{rank} input")
    return axis % rank


def _infer_cumsum(node, in_types, consts):
    cumsum_axis(node, len(in_types[0].shape), consts[1])
    if in_types[0].dtype == np.bool_:
        raise node.fail("CumSum of bool is not defined")
    return [in_types[0]]


def _bind_cumsum(node, ins, outs, scratch):
    x, y = ins[0], outs[0]
    axis = cumsum_axis(node, x.ndim, ins[1])
    if int(node.attrs.get("reverse", 0)):
        x, y = np.flip(x, axis), np.flip(y, axis)
    if not int(node.attrs.get("exclusive", 0)):
        return call(np.cumsum, x, axis=axis, out=y)
    head = [slice(None)] * x.ndim
    first, rest, lead = list(head), list(head), list(head)
    first[axis], rest[axis], lead[axis] = slice(0, 1), slice(1, None), slice(0, -1)
    return [call(np.copyto, y[tuple(first)], scalar(0, y.dtype)),
            call(np.cumsum, x[tuple(lead)], axis=axis, out=y[tuple(rest)])]


register("Trilu", _infer_trilu, _bind_trilu, const_inputs=(1,), flops=lambda n, i, o: 0)
register("CumSum", _infer_cumsum, _bind_cumsum, const_inputs=(1,), flops=lambda n, i, o: o[0].size)
