"""Quantized arithmetic: QuantizeLinear, DequantizeLinear, and the integer products
MatMulInteger and ConvInteger (int32 accumulators).

    QuantizeLinear    y = saturate(round_half_even(x / scale) + zero_point)      (NaN → the low bound)
    DequantizeLinear  y = (float32(x) - float32(zero_point)) * scale
    MatMulInteger     y = (A - a_zero_point) @ (B - b_zero_point)                 int32
    ConvInteger       y = conv(X - x_zero_point, W - w_zero_point)                int32, zero padding

A scale (and zero point) is one value, or one per index of ``axis`` (per channel). Blocked
quantization, 4-bit and float8 types are refused by name. QLinearMatMul and QLinearConv are
these ops plus a requantization (passes/quant.py lowers them); the int32 products here are
exact (the reference sums in float64, exact for any |sum| < 2**53).
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from . import conv
from .elementwise import _ONNX_CAST
from .linalg import _matmul_shape
from .registry import call, full_shape, is_const, register

QUANT = {np.dtype(t): r for t, r in (("uint8", (0, 255)), ("int8", (-128, 127)),
                                     ("uint16", (0, 65535)), ("int16", (-32768, 32767)))}
EIGHT_BIT = (np.dtype(np.uint8), np.dtype(np.int8))


def _names(dtypes) -> str:
    return ", ".join(sorted(np.dtype(d).name for d in dtypes))


def _axis(node, rank: int) -> int:
    a = int(node.attrs.get("axis", 1))
    if not -rank <= a < max(rank, 1):
        raise node.fail(f"axis {a} is out of range for a rank-{rank} input")
    return a % rank if rank else 0


def _check_params(node, x: TensorType, scale: TensorType, zp: TensorType | None) -> None:
    """A scale (and zero point): one value, or one per index of ``axis``."""
    if int(node.attrs.get("block_size", 0)):
        raise node.fail(f"blocked quantization (block_size={node.attrs['block_size']}) is not supported; "
                        "nnos takes one scale per tensor or per axis")
    if scale.dtype.kind != "f":
        raise node.fail(f"the scale must be a float tensor, got {scale}")
    if scale.size != 1 or len(scale.shape) > 1:
        if len(scale.shape) != 1:
            raise node.fail(f"the scale must be a scalar or 1-D, got {scale}")
        a = _axis(node, len(x.shape))
        if scale.shape[0] != x.shape[a]:
            raise node.fail(f"the per-axis scale has {scale.shape[0]} values, but axis {a} of the input "
                            f"{x} has {x.shape[a]}")
    if zp is not None and zp.shape != scale.shape and not (zp.size == 1 == scale.size):
        raise node.fail(f"the zero point {zp} does not match its scale {scale}")


def param_view(node, p: np.ndarray | None, shape: tuple) -> np.ndarray | None:
    """A scale or zero point shaped to broadcast against an input of ``shape``: 0-d for one
    value, else its values along ``axis``."""
    if p is None:
        return None
    if p.size == 1:
        return p.reshape(())
    dims = [1] * len(shape)
    dims[_axis(node, len(shape))] = p.size
    return p.reshape(dims)


def _expanded(node, p, shape):
    """A parameter as an operand a ufunc takes without broadcasting machinery per call (a
    constant expanded once); a run-time per-axis one keeps numpy's broadcasting."""
    v = param_view(node, p, shape)
    if v is None or v.ndim == 0 or not is_const(v):
        return v
    return full_shape(v, shape)[0]


# --- QuantizeLinear ------------------------------------------------------------------------
def quantized_dtype(node, zp: TensorType | None) -> np.dtype:
    code = int(node.attrs.get("output_dtype", 0))
    if code and code not in _ONNX_CAST:
        raise node.fail(f"output_dtype {code} is not supported; nnos quantizes to {_names(QUANT)}")
    dt = zp.dtype if zp is not None else np.dtype(_ONNX_CAST[code]) if code else np.dtype(np.uint8)
    if code and zp is not None and np.dtype(_ONNX_CAST[code]) != zp.dtype:
        raise node.fail(f"output_dtype {_ONNX_CAST[code]} differs from the zero point's type {zp.dtype}")
    if dt not in QUANT:
        raise node.fail(f"quantizing to {dt} is not supported; nnos quantizes to {_names(QUANT)}")
    return dt


def compute_dtype(x: np.dtype, scale: np.dtype) -> np.dtype:
    """What x / scale is computed in: numpy's (and onnx's reference's) type for the pair."""
    return np.result_type(x, scale)


def _infer_quantize(node, in_types, consts):
    x, scale = in_types[0], in_types[1]
    zp = in_types[2] if len(in_types) > 2 else None
    if x.dtype.kind != "f" and x.dtype != np.int32:
        raise node.fail(f"QuantizeLinear takes a float or int32 input, got {x}")
    precision = int(node.attrs.get("precision", 0))
    if precision and _ONNX_CAST.get(precision) != compute_dtype(x.dtype, scale.dtype).name:
        raise node.fail(f"precision {precision} is not supported: nnos divides in "
                        f"{compute_dtype(x.dtype, scale.dtype)} for a {x.dtype} input and {scale.dtype} scale")
    _check_params(node, x, scale, zp)
    return [TensorType(quantized_dtype(node, zp), x.shape)]


def _quantize_scratch(node, in_types, out_types):
    return [(TensorType(compute_dtype(in_types[0].dtype, in_types[1].dtype), in_types[0].shape), False)]


def _bind_quantize(node, ins, outs, scratch):
    x, y, t = ins[0], outs[0], scratch[0]
    scale = _expanded(node, ins[1], x.shape)
    zp = _expanded(node, ins[2] if len(ins) > 2 else None, x.shape)
    lo, hi = (np.array(v, t.dtype) for v in QUANT[y.dtype])
    steps = [call(np.divide, x, scale, out=t), call(np.rint, t, out=t)]
    if zp is not None:
        steps.append(call(np.add, t, zp, out=t, casting="unsafe"))
    return steps + [call(np.fmax, t, lo, out=t), call(np.fmin, t, hi, out=t),      # NaN → lo, as fmax drops it
                    call(np.copyto, y, t, casting="unsafe")]


register("QuantizeLinear", _infer_quantize, _bind_quantize, scratch=_quantize_scratch,
         flops=lambda n, i, o: 4 * o[0].size)


# --- DequantizeLinear ----------------------------------------------------------------------
def _infer_dequantize(node, in_types, consts):
    x, scale = in_types[0], in_types[1]
    zp = in_types[2] if len(in_types) > 2 else None
    if x.dtype not in QUANT and x.dtype != np.int32:
        raise node.fail(f"DequantizeLinear takes {_names(list(QUANT) + [np.int32])}, got {x}")
    if zp is not None and zp.dtype != x.dtype:
        raise node.fail(f"the zero point {zp} must have the input's type {x.dtype}")
    _check_params(node, x, scale, zp)
    code = int(node.attrs.get("output_dtype", 0))
    out = np.dtype(_ONNX_CAST[code]) if code in _ONNX_CAST else scale.dtype
    if code and (code not in _ONNX_CAST or out.kind != "f"):
        raise node.fail(f"output_dtype {code} is not a float type nnos supports")
    return [TensorType(out, x.shape)]


def _dequantize_scratch(node, in_types, out_types):
    return [] if out_types[0].dtype == np.float32 else [(TensorType(np.dtype(np.float32), out_types[0].shape), False)]


def _bind_dequantize(node, ins, outs, scratch):
    x, y = ins[0], outs[0]
    t = y if y.dtype == np.float32 else scratch[0]
    scale = _expanded(node, ins[1], x.shape)
    zp = _expanded(node, ins[2] if len(ins) > 2 else None, x.shape)
    if zp is None:
        steps = [call(np.copyto, t, x, casting="unsafe")]
    else:
        steps = [call(np.subtract, x, zp, out=t, dtype=np.float32)]
    steps.append(call(np.multiply, t, scale, out=t, casting="unsafe"))
    if t is not y:
        steps.append(call(np.copyto, y, t, casting="unsafe"))
    return steps


register("DequantizeLinear", _infer_dequantize, _bind_dequantize, scratch=_dequantize_scratch,
         flops=lambda n, i, o: 2 * o[0].size)


# --- MatMulInteger -------------------------------------------------------------------------
def _zero_point(node, t: TensorType | None, x: TensorType, length: int, what: str, per: str) -> None:
    if t is None:
        return
    if t.dtype != x.dtype:
        raise node.fail(f"{what}'s zero point {t} must have its type {x.dtype}")
    if t.size != 1 and t.shape != (length,):
        raise node.fail(f"{what}'s zero point {t} must be one value or {length} (one per {per})")


def _infer_matmul_integer(node, in_types, consts):
    a, b = in_types[0], in_types[1]
    for name, t in (("A", a), ("B", b)):
        if t.dtype not in EIGHT_BIT:
            raise node.fail(f"{name} must be uint8 or int8, got {t}")
    shape, _ = _matmul_shape(node, a, b)
    _zero_point(node, in_types[2] if len(in_types) > 2 else None, a, a.shape[-2] if len(a.shape) > 1 else 1, "A", "row")
    _zero_point(node, in_types[3] if len(in_types) > 3 else None, b, b.shape[-1], "B", "column")
    return [TensorType(np.dtype(np.int32), shape)]


def _matmul_integer_scratch(node, in_types, out_types):
    a, b = in_types[0], in_types[1]
    f64 = np.dtype(np.float64)
    return [(TensorType(f64, a.shape), False), (TensorType(f64, b.shape), False), (TensorType(f64, out_types[0].shape), False)]


def _centered(x, zp, into):
    """float64 x - zp (``zp`` already shaped to broadcast against x, or None): the constant
    itself when both are constants, else (the scratch it is computed into, its step)."""
    if is_const(x) and (zp is None or is_const(zp)):
        c = x.astype(np.float64) - (0 if zp is None else zp.astype(np.float64))
        c.flags.writeable = False
        return c, []
    if zp is None:
        return into, [call(np.copyto, into, x, casting="unsafe")]
    return into, [call(np.subtract, x, zp, out=into, dtype=np.float64)]


def _shaped(zp, shape):
    """A zero point as a view that broadcasts: 0-d for one value, else ``shape``."""
    if zp is None:
        return None
    return zp.reshape(()) if zp.size == 1 else zp.reshape(shape)


def _bind_matmul_integer(node, ins, outs, scratch):
    a, b, y = ins[0], ins[1], outs[0]
    ta, tb, ty = scratch
    a64, sa = _centered(a, _shaped(ins[2] if len(ins) > 2 else None, (-1, 1)), ta)     # one per row
    b64, sb = _centered(b, _shaped(ins[3] if len(ins) > 3 else None, (-1,)), tb)       # one per column
    return sa + sb + [call(np.matmul, a64, b64, out=ty), call(np.copyto, y, ty, casting="unsafe")]


register("MatMulInteger", _infer_matmul_integer, _bind_matmul_integer, scratch=_matmul_integer_scratch,
         flops=lambda n, i, o: 2 * o[0].size * _matmul_shape(n, i[0], i[1])[1])


# --- ConvInteger ---------------------------------------------------------------------------
def _as_float64(types):
    return [TensorType(np.dtype(np.float64), t.shape) if t is not None else None for t in types]


def _infer_conv_integer(node, in_types, consts):
    x, w = in_types[0], in_types[1]
    for name, t in (("X", x), ("W", w)):
        if t.dtype not in EIGHT_BIT:
            raise node.fail(f"{name} must be uint8 or int8, got {t}")
    xz = in_types[2] if len(in_types) > 2 else None
    if xz is not None and (xz.size != 1 or xz.dtype != x.dtype):
        raise node.fail(f"x_zero_point must be one {x.dtype} value, got {xz}")
    _zero_point(node, in_types[3] if len(in_types) > 3 else None, w, w.shape[0], "W", "output channel")
    (y,) = conv._infer_conv(node, _as_float64(in_types[:2]), consts)
    return [TensorType(np.dtype(np.int32), y.shape)]


def _conv_integer_scratch(node, in_types, out_types):
    f = _as_float64(in_types[:2])
    y = TensorType(np.dtype(np.float64), out_types[0].shape)
    return [(f[0], False), (f[1], False), (y, False)] + conv._conv_scratch(node, f, [y])


def _bind_conv_integer(node, ins, outs, scratch):
    x, w, y = ins[0], ins[1], outs[0]
    tx, tw, ty = scratch[:3]
    x64, sx = _centered(x, _shaped(ins[2] if len(ins) > 2 else None, ()), tx)
    w64, sw = _centered(w, _shaped(ins[3] if len(ins) > 3 else None, (-1,) + (1,) * (w.ndim - 1)), tw)
    return sx + sw + [conv._bind_conv(node, [x64, w64], [ty], scratch[3:]), call(np.copyto, y, ty, casting="unsafe")]


register("ConvInteger", _infer_conv_integer, _bind_conv_integer, scratch=_conv_integer_scratch,
         flops=lambda n, i, o: 2 * o[0].size * int(np.prod(i[1].shape[1:])))


# --- nnos.QuantizeDequantize ----------------------------------------------------------------
# nnos's own op, never in a model (ONNX's checker knows no such op): passes/qdq.py makes it of a
# QuantizeLinear whose only reader is a DequantizeLinear by the same scale and zero point — a
# QDQ model's rounding of a float tensor to its 8-bit grid. Elementwise, so the fusion pass
# chains it with the ops around it. Its scale and zero point broadcast against x as numpy's
# do (per channel: a (C, 1, 1) constant); the zero point's type, also the attribute ``to``
# (ONNX's code), is the grid's:
#     y = (saturate(round_half_even(x / scale) + zero_point) - zero_point) * scale     (float32)
# exactly QuantizeLinear then DequantizeLinear: the quantized value is an integer float32 holds.
FAKE_QUANT = "nnos.QuantizeDequantize"


def grid_dtype(attrs: dict) -> np.dtype:
    """The 8-bit type a rounding's ``to`` names (void when it names none)."""
    return np.dtype(_ONNX_CAST.get(int(attrs.get("to", 0)), "void"))


def _check_grid(node, zp: TensorType) -> None:
    dt = grid_dtype(node.attrs)
    if zp.dtype not in EIGHT_BIT or dt != zp.dtype:
        raise node.fail(f"the zero point {zp} must be {_names(EIGHT_BIT)} and match to={node.attrs.get('to')} ({dt})")


def _infer_fake_quant(node, in_types, consts):
    if len(in_types) != 3 or any(t is None for t in in_types):
        raise node.fail(f"{FAKE_QUANT} takes x, a scale and a zero point, got {len(in_types)} inputs")
    x, scale, zp = in_types
    _check_grid(node, zp)
    if consts[1] is None or consts[2] is None:
        raise node.fail(f"{FAKE_QUANT} takes a constant scale and zero point")
    if x.dtype != np.float32 or scale.dtype != np.float32:
        raise node.fail(f"{FAKE_QUANT} takes float32 x and scale, got {x} and {scale}")
    for what, t in (("scale", scale), ("zero point", zp)):
        try:
            shape = np.broadcast_shapes(x.shape, t.shape)
        except ValueError:
            shape = None
        if shape != x.shape:
            raise node.fail(f"the {what} {t} does not broadcast to x {x}")
    return [x]


def _fake_quant_scratch(node, in_types, out_types):
    return [(in_types[0], False)]


def _bind_fake_quant(node, ins, outs, scratch):
    x, y, t = ins[0], outs[0], scratch[0]
    scale, zp = (full_shape(p, x.shape)[0] if p.size != 1 else p.reshape(()) for p in ins[1:3])
    lo, hi = (np.array(v, np.float32) for v in QUANT[ins[2].dtype])
    return [call(np.divide, x, scale, out=t), call(np.rint, t, out=t), call(np.add, t, zp, out=t, casting="unsafe"),
            call(np.fmax, t, lo, out=t), call(np.fmin, t, hi, out=t),            # NaN → lo, as QuantizeLinear's
            call(np.subtract, t, zp, out=t, dtype=np.float32), call(np.multiply, t, scale, out=y)]


register(FAKE_QUANT, _infer_fake_quant, _bind_fake_quant, scratch=_fake_quant_scratch,
         flops=lambda n, i, o: 6 * o[0].size, elementwise=True)
