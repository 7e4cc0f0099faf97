"""Normalisation and softmax: BatchNormalization (inference), LayerNormalization, Softmax,
LogSoftmax. Per-axis statistics go to small scratch arrays of the reduced shape."""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import register, scalar


def _axis(node, rank, default):
    axis = int(node.attrs.get("axis", default))
    if not -rank <= axis < rank:
        raise node.fail(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


# --- BatchNormalization ----------------------------------------------------------------------
def _infer_bn(node, in_types, consts):
    x = in_types[0]
    if int(node.attrs.get("training_mode", 0)):
        raise node.fail("training_mode=1 is not supported: nnos runs inference only")
    if len(x.shape) < 2:
        raise node.fail(f"input must have a channel axis, got {x}")
    for name, t in zip(("scale", "B", "mean", "var"), in_types[1:5]):
        if t.shape != (x.shape[1],):
            raise node.fail(f"{name} {t} must have shape ({x.shape[1]},)")
    return [x]


def bn_affine(scale, bias, mean, var, eps):
    """y = x * a + b with a = scale / sqrt(var + eps), b = bias - mean * a (float64 then cast)."""
    a = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return a, bias.astype(np.float64) - mean.astype(np.float64) * a


def _bind_bn(node, ins, outs, scratch):
    x, scale, bias, mean, var = ins[:5]
    y = outs[0]
    a, b = scratch
    shape = (1, -1) + (1,) * (x.ndim - 2)
    av, bv = a.reshape(shape), b.reshape(shape)
    eps = scalar(node.attrs.get("epsilon", 1e-5), a.dtype)

    def run():
        np.add(var, eps, out=a)
        np.sqrt(a, out=a)
        np.divide(scale, a, out=a)
        np.multiply(mean, a, out=b)
        np.subtract(bias, b, out=b)
        np.multiply(x, av, out=y)
        np.add(y, bv, out=y)
    return run


register("BatchNormalization", _infer_bn, _bind_bn,
         scratch=lambda n, i, o: [(TensorType(i[0].dtype, (i[0].shape[1],)), False)] * 2,
         flops=lambda n, i, o: 2 * o[0].size)


# --- LayerNormalization ------------------------------------------------------------------------
def _infer_ln(node, in_types, consts):
    x = in_types[0]
    axis = _axis(node, len(x.shape), -1)
    stat = TensorType(np.dtype(np.float32) if x.dtype == np.float16 else x.dtype,
                      x.shape[:axis] + (1,) * (len(x.shape) - axis))
    return [x, stat, stat][:len(node.outputs)]


def _ln_scratch(node, in_types, out_types):
    x = in_types[0]
    axis = _axis(node, len(x.shape), -1)
    stat = TensorType(x.dtype, x.shape[:axis] + (1,) * (len(x.shape) - axis))
    return [(stat, False), (stat, False)]


def _bind_ln(node, ins, outs, scratch):
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    y = outs[0]
    mean_out = outs[1] if len(outs) > 1 else None
    inv_out = outs[2] if len(outs) > 2 else None
    axis = _axis(node, x.ndim, -1)
    axes = tuple(range(axis, x.ndim))
    m, v = scratch
    inv_n = scalar(1.0 / int(np.prod(x.shape[axis:])), x.dtype)
    eps = scalar(node.attrs.get("epsilon", 1e-5), x.dtype)

    def run():
        np.add.reduce(x, axis=axes, keepdims=True, out=m)
        np.multiply(m, inv_n, out=m)
        np.subtract(x, m, out=y)
        np.square(y, out=y)
        np.add.reduce(y, axis=axes, keepdims=True, out=v)
        np.multiply(v, inv_n, out=v)
        np.add(v, eps, out=v)
        np.sqrt(v, out=v)
        np.reciprocal(v, out=v)
        np.subtract(x, m, out=y)
        np.multiply(y, v, out=y)
        np.multiply(y, scale, out=y)
        if bias is not None:
            np.add(y, bias, out=y)
        if mean_out is not None:
            np.copyto(mean_out, m, casting="unsafe")
        if inv_out is not None:
            np.copyto(inv_out, v, casting="unsafe")
    return run


register("LayerNormalization", _infer_ln, _bind_ln, scratch=_ln_scratch, flops=lambda n, i, o: 8 * o[0].size)


# --- Softmax / LogSoftmax ----------------------------------------------------------------------
def _infer_softmax(node, in_types, consts):
    x = in_types[0]
    if x.dtype.kind != "f":
        raise node.fail(f"expects a floating-point input, got {x}")
    _axis(node, len(x.shape), -1)
    return [x]


def _softmax_scratch(node, in_types, out_types):
    x = in_types[0]
    axis = _axis(node, len(x.shape), -1)
    red = TensorType(x.dtype, x.shape[:axis] + (1,) + x.shape[axis + 1:])
    extra = [(x, False)] if node.op == "LogSoftmax" else []
    return [(red, False), (red, False)] + extra


def _bind_softmax(node, ins, outs, scratch):
    x, y = ins[0], outs[0]
    axis = _axis(node, x.ndim, -1)
    mx, s = scratch[0], scratch[1]
    log = node.op == "LogSoftmax"
    e = scratch[2] if log else y

    def run():
        np.maximum.reduce(x, axis=axis, keepdims=True, out=mx)
        np.subtract(x, mx, out=e)
        if log:
            np.subtract(x, mx, out=y)
        np.exp(e, out=e)
        np.add.reduce(e, axis=axis, keepdims=True, out=s)
        if log:
            np.log(s, out=s)
            np.subtract(y, s, out=y)
        else:
            np.divide(y, s, out=y)
    return run


for _name in ("Softmax", "LogSoftmax"):
    register(_name, _infer_softmax, _bind_softmax, scratch=_softmax_scratch, flops=lambda n, i, o: 5 * o[0].size)
