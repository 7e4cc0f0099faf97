"""The activations transformers and today's policies use, and trigonometry: Erf, Gelu (exact,
and the tanh approximation, ``approximate="tanh"``), Mish, Sin, Cos.

numpy has no erf: in float32 the reference computes it with Abramowitz & Stegun 7.1.26
(absolute error ≤ 1.5·10⁻⁷, about a float32 rounding near ±1) for |x| ≥ 0.5 and with its
Maclaurin series below (relative error < 10⁻⁷: tiny inputs keep their size and sign); in float64
with ``math.erf`` element by element. Every binding tolerates ``out`` being an input.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import TensorType
from .elementwise import _infer_float_unary, fit
from .registry import call, register, scalar

_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)      # a1 … a5
# erf(x) = 2/√π · x · Σ (−1)ⁿ x²ⁿ / (n! (2n + 1)), to n = 6: < 10⁻⁸ relative for |x| < 0.5
_SERIES = tuple(2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(7))


def _scratch(n: int, mask: bool = False):
    """``n`` arrays of the output's type (and a boolean one of its shape)."""
    def scratch(node, in_types, out_types):
        return [(out_types[0], False)] * n + ([(TensorType(np.dtype(np.bool_), out_types[0].shape), False)] if mask else [])
    return scratch


def _erf_into(x, o, t, s, r, m) -> list:
    """o = erf(x) with scratch t, s, r and the mask m (x may be o: it is read before o is written)."""
    if o.dtype == np.float64:
        return _erf64(x, o)
    dt = o.dtype
    steps = [call(np.absolute, x, r), call(np.less, r, scalar(0.5, dt), m),              # m: the series' range
             call(np.multiply, x, x, r), call(np.multiply, r, scalar(_SERIES[6], dt), s)]  # s: Horner in x²
    for c in reversed(_SERIES[:6]):
        steps += [call(np.add, s, scalar(c, dt), s), call(np.multiply, s, r, s)] if c != _SERIES[0] else \
            [call(np.add, s, scalar(c, dt), s)]
    steps.append(call(np.multiply, s, x, r))                                             # r = series(x)
    steps += [call(np.multiply, x, x, s), call(np.negative, s, s), call(np.exp, s, s),   # s = e^(−x²)
             call(np.copysign, s, x, s),                                                # … with x's sign
             call(np.absolute, x, t), call(np.multiply, t, scalar(_P, dt), t),           # t = 1 / (1 + p|x|)
             call(np.add, t, scalar(1, dt), t), call(np.reciprocal, t, t),
             call(np.multiply, t, scalar(_A[4], dt), o)]
    for a in reversed(_A[:4]):                                                           # Horner
        steps += [call(np.add, o, scalar(a, dt), o), call(np.multiply, o, t, o)]
    return steps + [call(np.multiply, o, s, o),                                          # sign · poly · e^(−x²)
                    call(np.copysign, scalar(1, dt), s, t), call(np.subtract, t, o, o),  # sign − that
                    call(np.copyto, o, r, where=m)]                                      # |x| < 0.5: the series


def _erf64(x, o):
    """float64: math.erf element by element (exact to the double; allocates: the reference only)."""
    def run(f=np.frompyfunc(math.erf, 1, 1)):
        np.copyto(o, f(x), casting="unsafe")
    return run


def _bind_erf(node, ins, outs, scratch):
    o = outs[0]
    return _erf_into(fit(ins[0], o), o, *scratch)


def _bind_gelu(node, ins, outs, scratch):
    o = outs[0]
    x, u, dt = fit(ins[0], o), scratch[0], o.dtype
    if node.attrs.get("approximate", "none") == "tanh":          # 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
        steps = [call(np.multiply, x, x, u), call(np.multiply, u, x, u), call(np.multiply, u, scalar(0.044715, dt), u),
                 call(np.add, u, x, u), call(np.multiply, u, scalar(math.sqrt(2 / math.pi), dt), u), call(np.tanh, u, u)]
    else:                                                         # 0.5 x (1 + erf(x / √2))
        steps = [call(np.multiply, x, scalar(math.sqrt(0.5), dt), u), _erf_into(u, u, *scratch[1:])]
    return steps + [call(np.add, u, scalar(1, dt), u), call(np.multiply, u, scalar(0.5, dt), u), call(np.multiply, x, u, o)]


def _infer_gelu(node, in_types, consts):
    mode = node.attrs.get("approximate", "none")
    if mode not in ("none", "tanh"):
        raise node.fail(f"approximate must be 'none' or 'tanh', got {mode!r}")
    return _infer_float_unary(node, in_types, consts)


def _bind_mish(node, ins, outs, scratch):
    """x · tanh(softplus(x)), softplus(x) = max(x, 0) + log1p(e^−|x|)."""
    o = outs[0]
    x, t, u = fit(ins[0], o), scratch[0], scratch[1]
    return [call(np.absolute, x, t), call(np.negative, t, t), call(np.exp, t, t), call(np.log1p, t, t),
            call(np.maximum, x, scalar(0, o.dtype), out=u), call(np.add, u, t, u), call(np.tanh, u, u),
            call(np.multiply, x, u, o)]


def _trig(ufunc):
    def bind(node, ins, outs, scratch):
        return call(ufunc, fit(ins[0], outs[0]), outs[0])
    return bind


_ew = dict(elementwise=True)
register("Erf", _infer_float_unary, _bind_erf, scratch=_scratch(3, mask=True), flops=lambda n, i, o: 30 * o[0].size, **_ew)
register("Gelu", _infer_gelu, _bind_gelu, scratch=_scratch(4, mask=True), flops=lambda n, i, o: 34 * o[0].size, **_ew)
register("Mish", _infer_float_unary, _bind_mish, scratch=_scratch(2), flops=lambda n, i, o: 8 * o[0].size, **_ew)
register("Sin", _infer_float_unary, _trig(np.sin), flops=lambda n, i, o: o[0].size, **_ew)
register("Cos", _infer_float_unary, _trig(np.cos), flops=lambda n, i, o: o[0].size, **_ew)
