"""Normalisation and softmax: BatchNormalization (inference), LayerNormalization, Softmax,
LogSoftmax. Per-axis statistics go to small scratch arrays of the reduced shape."""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import call, register, scalar


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

    return [call(np.add, var, eps, a), call(np.sqrt, a, a), call(np.divide, scale, a, a),
            call(np.multiply, mean, a, b), call(np.subtract, bias, b, b),
            call(np.multiply, x, av, y), call(np.add, y, bv, y)]


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

    program = [call(np.add.reduce, x, axis=axes, keepdims=True, out=m), call(np.multiply, m, inv_n, m),
               call(np.subtract, x, m, y), call(np.square, y, y),
               call(np.add.reduce, y, axis=axes, keepdims=True, out=v), call(np.multiply, v, inv_n, v),
               call(np.add, v, eps, v), call(np.sqrt, v, v), call(np.reciprocal, v, v),
               call(np.subtract, x, m, y), call(np.multiply, y, v, y), call(np.multiply, y, scale, y)]
    if bias is not None:
        program.append(call(np.add, y, bias, y))
    if mean_out is not None:
        program.append(call(np.copyto, mean_out, m, casting="unsafe"))
    if inv_out is not None:
        program.append(call(np.copyto, inv_out, v, casting="unsafe"))
    return program


register("LayerNormalization", _infer_ln, _bind_ln, scratch=_ln_scratch, flops=lambda n, i, o: 8 * o[0].size)


# --- RMSNormalization (opset 23): x / sqrt(mean(x²) + eps) · scale, over the axes from ``axis`` --
def _infer_rms(node, in_types, consts):
    if int(node.attrs.get("stash_type", 1)) != 1:
        raise node.fail(f"stash_type {node.attrs['stash_type']} is not supported (1: statistics in float32)")
    return [in_types[0]]


def _bind_rms(node, ins, outs, scratch):
    x, scale, y = ins[0], ins[1], outs[0]
    axis = _axis(node, x.ndim, -1)
    axes = tuple(range(axis, x.ndim))
    _, v = scratch
    inv_n = scalar(1.0 / int(np.prod(x.shape[axis:])), x.dtype)
    eps = scalar(node.attrs.get("epsilon", 1e-5), x.dtype)
    return [call(np.square, x, y), call(np.add.reduce, y, axis=axes, keepdims=True, out=v), call(np.multiply, v, inv_n, v),
            call(np.add, v, eps, v), call(np.sqrt, v, v), call(np.reciprocal, v, v),
            call(np.multiply, x, v, y), call(np.multiply, y, scale, y)]


register("RMSNormalization", _infer_rms, _bind_rms, scratch=_ln_scratch, flops=lambda n, i, o: 5 * o[0].size)


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

    program = [call(np.maximum.reduce, x, axis=axis, keepdims=True, out=mx), call(np.subtract, x, mx, e)]
    if log:
        program.append(call(np.subtract, x, mx, y))
    program += [call(np.exp, e, e), call(np.add.reduce, e, axis=axis, keepdims=True, out=s)]
    if log:
        program += [call(np.log, s, s), call(np.subtract, y, s, y)]
    else:
        program.append(call(np.divide, y, s, y))
    return program


for _name in ("Softmax", "LogSoftmax"):
    register(_name, _infer_softmax, _bind_softmax, scratch=_softmax_scratch, flops=lambda n, i, o: 5 * o[0].size)
