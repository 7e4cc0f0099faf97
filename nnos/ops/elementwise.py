"""Elementwise ops: unary math, activations, broadcasting binary ops, comparisons, Where, Clip, Cast.

Every binding tolerates ``out`` being the same array as an input (fusion runs them in place).
Activations that need a temporary get one scratch array of the output's shape.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import broadcast_scratch, call, full_shape, register, scalar


def _broadcast(node, in_types, dtype=None):
    present = [t for t in in_types if t is not None]
    try:
        shape = np.broadcast_shapes(*(t.shape for t in present))
    except ValueError as e:
        raise node.fail("inputs do not broadcast: " + ", ".join(str(t) for t in present)) from e
    return TensorType(np.dtype(dtype) if dtype is not None else present[0].dtype, tuple(shape))


def _same_dtype(node, in_types):
    dts = {t.dtype for t in in_types if t is not None}
    if len(dts) > 1:
        raise node.fail("inputs must share one dtype, got " + ", ".join(str(t) for t in in_types if t))


def _infer_same(node, in_types, consts):
    _same_dtype(node, in_types)
    return [_broadcast(node, in_types)]


def _infer_bool(node, in_types, consts):
    _same_dtype(node, in_types)
    return [_broadcast(node, in_types, np.bool_)]


def _float_only(node, in_types):
    if in_types[0].dtype.kind != "f":
        raise node.fail(f"expects a floating-point input, got {in_types[0]}")


def _infer_float_unary(node, in_types, consts):
    _float_only(node, in_types)
    return [in_types[0]]


def fit(a, o):
    """``a`` viewed with ``o``'s shape when it holds as many elements: numpy's broadcasting
    path costs about twice the same-shape path on small arrays."""
    if a is not None and a.shape != o.shape and a.size == o.size and a.flags.c_contiguous:
        return a.reshape(o.shape)
    return a


def _out_scratch(node, in_types, out_types):
    return [(out_types[0], False)]


def _ew_flops(node, in_types, out_types):
    return out_types[0].size


# --- unary ops that map to one ufunc -------------------------------------------------------
_UNARY = {"Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Neg": np.negative, "Abs": np.absolute,
          "Reciprocal": np.reciprocal, "Tanh": np.tanh, "Round": np.rint, "Floor": np.floor, "Ceil": np.ceil}


def _unary_binder(ufunc):
    def bind(node, ins, outs, scratch):
        return call(ufunc, fit(ins[0], outs[0]), outs[0])
    return bind


for _name, _uf in _UNARY.items():
    _infer = _infer_same if _name in ("Neg", "Abs") else _infer_float_unary
    register(_name, _infer, _unary_binder(_uf), flops=_ew_flops, elementwise=True)


def _bind_relu(node, ins, outs, scratch):
    o = outs[0]
    return call(np.maximum, fit(ins[0], o), scalar(0, o.dtype), out=o)


def _bind_leaky_relu(node, ins, outs, scratch):
    o, t = outs[0], scratch[0]
    x = fit(ins[0], o)
    alpha = float(node.attrs.get("alpha", 0.01))
    pick = np.maximum if alpha <= 1.0 else np.minimum
    return [call(np.multiply, x, scalar(alpha, o.dtype), t), call(pick, x, t, out=o)]


def _bind_elu(node, ins, outs, scratch):
    o, t = outs[0], scratch[0]
    x = fit(ins[0], o)
    a, zero = scalar(node.attrs.get("alpha", 1.0), o.dtype), scalar(0, o.dtype)
    return [call(np.minimum, x, zero, out=t), call(np.expm1, t, t), call(np.multiply, t, a, t),
            call(np.maximum, x, zero, out=o), call(np.add, o, t, o)]


def _bind_sigmoid(node, ins, outs, scratch):
    # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5: no overflow for large |x|, no temporaries.
    o = outs[0]
    half = scalar(0.5, o.dtype)
    return [call(np.multiply, fit(ins[0], o), half, o), call(np.tanh, o, o),
            call(np.multiply, o, half, o), call(np.add, o, half, o)]


def _hard_sigmoid_into(x, o, alpha, beta):
    zero, one = scalar(0, o.dtype), scalar(1, o.dtype)
    a, b = scalar(alpha, o.dtype), scalar(beta, o.dtype)
    return [call(np.multiply, fit(x, o), a, o), call(np.add, o, b, o),
            call(np.maximum, o, zero, out=o), call(np.minimum, o, one, out=o)]


def _bind_hard_sigmoid(node, ins, outs, scratch):
    return _hard_sigmoid_into(ins[0], outs[0], node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5))


def _bind_hard_swish(node, ins, outs, scratch):
    o, t = outs[0], scratch[0]
    x = fit(ins[0], o)
    return [_hard_sigmoid_into(x, t, 1.0 / 6.0, 0.5), call(np.multiply, x, t, o)]


def _bind_softplus(node, ins, outs, scratch):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): exact for large |x|.
    o, t = outs[0], scratch[0]
    x = fit(ins[0], o)
    return [call(np.absolute, x, t), call(np.negative, t, t), call(np.exp, t, t), call(np.log1p, t, t),
            call(np.maximum, x, scalar(0, o.dtype), out=o), call(np.add, o, t, o)]


register("Relu", _infer_same, _bind_relu, flops=_ew_flops, elementwise=True)
for _name, _bind, _needs in (("LeakyRelu", _bind_leaky_relu, True), ("Elu", _bind_elu, True),
                             ("Sigmoid", _bind_sigmoid, False), ("HardSigmoid", _bind_hard_sigmoid, False),
                             ("HardSwish", _bind_hard_swish, True), ("Softplus", _bind_softplus, True)):
    register(_name, _infer_float_unary, _bind, scratch=_out_scratch if _needs else None,
             flops=lambda n, i, o: 4 * o[0].size, elementwise=True)


# --- binary ops ----------------------------------------------------------------------------
def operands(ins, o, scratch):
    """Inputs at the output's exact shape: (arrays, copy steps for run-time broadcasts)."""
    spare, arrays, steps = iter(scratch), [], []
    for a in ins:
        if a is None:
            arrays.append(None)
            continue
        needs = a.shape != o.shape and a.size != o.size
        full, step = full_shape(a, o.shape, next(spare) if needs else None)
        arrays.append(full)
        if step is not None:
            steps.append(step)
    return arrays, steps


def _bcast_scratch(node, in_types, out_types):
    return broadcast_scratch(in_types, out_types[0])


def _bcast_scratch_cmp(node, in_types, out_types):
    # comparisons: the scratch holds an input's dtype, not the bool output's
    return [(TensorType(t.dtype, out_types[0].shape), False) for t in in_types
            if t is not None and t.shape != out_types[0].shape and t.size != out_types[0].size]


def _binary_binder(ufunc):
    def bind(node, ins, outs, scratch):
        o = outs[0]
        (a, b), steps = operands(ins[:2], o, scratch)
        kw = {"out": o} if ufunc in (np.maximum, np.minimum) else {}
        return steps + [call(ufunc, a, b, **kw) if kw else call(ufunc, a, b, o)]
    return bind


for _name, _uf in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply)):
    register(_name, _infer_same, _binary_binder(_uf), scratch=_bcast_scratch, flops=_ew_flops, elementwise=True)
for _name, _uf in (("Equal", np.equal), ("Greater", np.greater), ("Less", np.less),
                   ("GreaterOrEqual", np.greater_equal), ("LessOrEqual", np.less_equal)):
    register(_name, _infer_bool, _binary_binder(_uf), scratch=_bcast_scratch_cmp, flops=_ew_flops, pointwise=True)


def _infer_logical(node, in_types, consts):
    if any(t.dtype != np.bool_ for t in in_types):
        raise node.fail("expects bool inputs, got " + ", ".join(str(t) for t in in_types))
    return _infer_bool(node, in_types, consts)


for _name, _uf in (("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor)):
    register(_name, _infer_logical, _binary_binder(_uf), scratch=_bcast_scratch_cmp, flops=_ew_flops, pointwise=True)
register("Not", _infer_logical, _unary_binder(np.logical_not), flops=_ew_flops, pointwise=True)


def _bind_div(node, ins, outs, scratch):
    o = outs[0]
    n_b = len(broadcast_scratch([TensorType(x.dtype, x.shape) for x in ins[:2]], TensorType(o.dtype, o.shape)))
    (a, b), steps = operands(ins[:2], o, scratch[:n_b])
    if o.dtype.kind == "f":
        return steps + [call(np.divide, a, b, o)]
    if o.dtype.kind == "u":
        return steps + [call(np.floor_divide, a, b, o)]
    t = scratch[n_b]   # ONNX integer division truncates toward zero: (a - fmod(a, b)) / b is exact
    return steps + [call(np.fmod, a, b, t), call(np.subtract, a, t, t), call(np.floor_divide, t, b, o)]


def _div_scratch(node, in_types, out_types):
    return broadcast_scratch(in_types, out_types[0]) + \
        ([(out_types[0], False)] if out_types[0].dtype.kind == "i" else [])


register("Div", _infer_same, _bind_div, scratch=_div_scratch, flops=_ew_flops, elementwise=True)


def _infer_pow(node, in_types, consts):
    return [_broadcast(node, in_types, in_types[0].dtype)]


def _bind_pow(node, ins, outs, scratch):
    a, b, o = ins[0], ins[1], outs[0]
    if b.dtype == o.dtype:
        return call(np.power, a, b, o)
    e = scratch[0]  # exponent of another dtype: cast it into the base's dtype first
    return [call(np.copyto, e, b, casting="unsafe"), call(np.power, a, e, o)]


def _pow_scratch(node, in_types, out_types):
    return [] if in_types[1].dtype == in_types[0].dtype else [(TensorType(in_types[0].dtype, in_types[1].shape), False)]


register("Pow", _infer_pow, _bind_pow, scratch=_pow_scratch, flops=lambda n, i, o: 10 * o[0].size,
         elementwise=True)


def _bind_mod(node, ins, outs, scratch):
    a, b, o = ins[0], ins[1], outs[0]
    uf = np.fmod if int(node.attrs.get("fmod", 0)) else np.mod   # fmod=0: sign of the divisor
    return call(uf, a, b, o)


register("Mod", _infer_same, _bind_mod, flops=_ew_flops, elementwise=True)


# --- variadic Min / Max ---------------------------------------------------------------------
def _variadic_binder(ufunc):
    def bind(node, ins, outs, scratch):
        xs, o = [x for x in ins if x is not None], outs[0]
        if len(xs) == 1:
            return call(np.copyto, o, xs[0])
        return [call(ufunc, xs[0], xs[1], out=o)] + [call(ufunc, o, x, out=o) for x in xs[2:]]
    return bind


register("Min", _infer_same, _variadic_binder(np.minimum), flops=_ew_flops, elementwise=True)
register("Max", _infer_same, _variadic_binder(np.maximum), flops=_ew_flops, elementwise=True)


# --- Clip, Where, Cast, Identity -----------------------------------------------------------
def _infer_clip(node, in_types, consts):
    for t in in_types[1:]:
        if t is not None and t.size != 1:
            raise node.fail(f"min/max must be scalars, got {t}")
    return [in_types[0]]


def _bind_clip(node, ins, outs, scratch):
    """Bounds as inputs (opset ≥ 11), else as attributes (a fused epilogue's constant bounds)."""
    x, o = ins[0], outs[0]
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    if lo is None and "min" in node.attrs:
        lo = np.array(node.attrs["min"], x.dtype)
    if hi is None and "max" in node.attrs:
        hi = np.array(node.attrs["max"], x.dtype)
    program, src = [], fit(x, o)
    if lo is not None:
        program.append(call(np.maximum, src, lo.reshape(()), out=o))
        src = o
    if hi is not None:
        program.append(call(np.minimum, src, hi.reshape(()), out=o))
    elif src is not o:
        program.append(call(np.copyto, o, src))
    return program


register("Clip", _infer_clip, _bind_clip, flops=_ew_flops, elementwise=True)


def _infer_where(node, in_types, consts):
    if in_types[0].dtype != np.bool_:
        raise node.fail(f"condition must be bool, got {in_types[0]}")
    if in_types[1].dtype != in_types[2].dtype:
        raise node.fail(f"X and Y must share a dtype, got {in_types[1]} and {in_types[2]}")
    return [_broadcast(node, in_types, in_types[1].dtype)]


def _bind_where(node, ins, outs, scratch):
    c, x, y, o = ins[0], ins[1], ins[2], outs[0]
    return [call(np.copyto, o, y), call(np.copyto, o, x, where=c)]


register("Where", _infer_where, _bind_where, flops=_ew_flops, pointwise=True)


_ONNX_CAST = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
              9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def _infer_cast(node, in_types, consts):
    to = int(node.attrs["to"])
    if to not in _ONNX_CAST:
        raise node.fail(f"Cast to ONNX type {to} is not supported; supported: "
                        + ", ".join(sorted(_ONNX_CAST.values())))
    return [TensorType(np.dtype(_ONNX_CAST[to]), in_types[0].shape)]


def _bind_cast(node, ins, outs, scratch):
    return call(np.copyto, outs[0], ins[0], casting="unsafe")


register("Cast", _infer_cast, _bind_cast, flops=_ew_flops, pointwise=True)

ONNX_TYPE = {np.dtype(v): k for k, v in _ONNX_CAST.items()}


def _infer_cast_like(node, in_types, consts):
    if in_types[1].dtype not in ONNX_TYPE:
        raise node.fail(f"CastLike to {in_types[1].dtype} is not supported")
    return [TensorType(in_types[1].dtype, in_types[0].shape)]


# CastLike: a Cast once the target's type is known (passes/infer.py rewrites it so)
register("CastLike", _infer_cast_like, _bind_cast, flops=_ew_flops)
