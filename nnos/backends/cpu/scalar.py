"""Every elementwise op as one scalar C expression, with numpy's semantics (the reference):
NaN propagates through max/min/relu/clip, integer division truncates and a zero divisor gives
0, Mod follows the divisor's sign unless fmod=1, integer overflow wraps.

``expr(op, args, in_dtype, out_dtype, attrs)``: ``args`` are C expressions already in
``in_dtype``'s compute type; the result is in ``out_dtype``'s compute type. The statement
expressions (``({ ... })``) evaluate each argument once.
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np

from ...ops.quant import FAKE_QUANT, QUANT, grid_dtype
from .ctype import compute, is_float, libm, literal

# helpers the prelude defines for every type (GNU C: __typeof__ and statement expressions)
SCALAR_PRELUDE = r"""
#define NNOS_MAX(a, b) ({ __typeof__(a) a_ = (a); __typeof__(a) b_ = (b); (a_ > b_ || a_ != a_) ? a_ : b_; })
#define NNOS_MIN(a, b) ({ __typeof__(a) a_ = (a); __typeof__(a) b_ = (b); (a_ < b_ || a_ != a_) ? a_ : b_; })
#define NNOS_IDIV(a, b) ({ __typeof__(a) a_ = (a); __typeof__(a) b_ = (b); \
    b_ == 0 ? (__typeof__(a))0 : b_ == (__typeof__(a))-1 ? (__typeof__(a))(0 - a_) : (__typeof__(a))(a_ / b_); })
#define NNOS_UDIV(a, b) ({ __typeof__(a) a_ = (a); __typeof__(a) b_ = (b); b_ == 0 ? (__typeof__(a))0 : a_ / b_; })
#define NNOS_IFMOD(a, b) ({ __typeof__(a) a_ = (a); __typeof__(a) b_ = (b); \
    (b_ == 0 || b_ == (__typeof__(a))-1) ? (__typeof__(a))0 : (__typeof__(a))(a_ % b_); })
#define NNOS_IMOD(a, b) ({ __typeof__(a) r_ = NNOS_IFMOD(a, b); __typeof__(a) d_ = (b); \
    (r_ != 0 && ((r_ < 0) != (d_ < 0))) ? (__typeof__(a))(r_ + d_) : r_; })
#define NNOS_UMOD(a, b) ({ __typeof__(a) a_ = (a); __typeof__(a) b_ = (b); b_ == 0 ? (__typeof__(a))0 : a_ % b_; })
static inline double nnos_modd(double a, double b) {
    double m = fmod(a, b);
    if (b == 0.0) return m;
    if (m != 0.0) { if ((b < 0.0) != (m < 0.0)) m += b; } else m = copysign(0.0, b);
    return m;
}
static inline float nnos_modf(float a, float b) {
    float m = fmodf(a, b);
    if (b == 0.0f) return m;
    if (m != 0.0f) { if ((b < 0.0f) != (m < 0.0f)) m += b; } else m = copysignf(0.0f, b);
    return m;
}
static inline int64_t nnos_ipow(int64_t a, int64_t b) {
    if (b < 0) return a == 1 ? 1 : a == -1 ? (b & 1 ? -1 : 1) : 0;
    int64_t r = 1;
    while (b) { if (b & 1) r *= a; a *= a; b >>= 1; }
    return r;
}
static inline uint64_t nnos_upow(uint64_t a, uint64_t b) {
    uint64_t r = 1;
    while (b) { if (b & 1) r *= a; a *= a; b >>= 1; }
    return r;
}
"""

UNARY_FLOAT = {"Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Tanh": "tanh", "Erf": "erf", "Sin": "sin", "Cos": "cos",
               "Round": "rint", "Floor": "floor", "Ceil": "ceil"}


def _lit(v, dt):
    return literal(v, dt)


def _gelu(c) -> str:
    """Exact: 0.5 x (1 + erf(x / √2)); approximate="tanh": 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))."""
    if c.attrs.get("approximate", "none") == "tanh":
        inner = f"{c.lit(math.sqrt(2 / math.pi))} * (x_ + {c.lit(0.044715)} * x_ * x_ * x_)"
        return f"({{ {c.t} x_ = ({c.a}); {c.lit(0.5)} * x_ * ({c.lit(1)} + {c.m('tanh')}({inner})); }})"
    return f"({{ {c.t} x_ = ({c.a}); {c.lit(0.5)} * x_ * ({c.lit(1)} + {c.m('erf')}(x_ * {c.lit(math.sqrt(0.5))})); }})"


def _hard_sigmoid(x, dt, alpha, beta):
    one, zero = _lit(1, dt), _lit(0, dt)
    return (f"({{ {compute(dt)} h_ = {_lit(alpha, dt)} * ({x}) + {_lit(beta, dt)}; "
            f"h_ = h_ < {zero} ? {zero} : h_; h_ > {one} ? {one} : h_; }})")


@dataclass(frozen=True)
class Operands:
    """What an entry of the op → C table writes an expression from."""
    args: list[str]              # C expressions of the inputs
    dt: np.dtype                 # the inputs' dtype
    out: np.dtype                # the output's dtype
    attrs: dict

    @property
    def a(self) -> str:
        return self.args[0] if self.args else ""

    @property
    def t(self) -> str:          # the C type arithmetic is done in
        return compute(self.dt)

    @property
    def fl(self) -> bool:
        return is_float(self.dt)

    def lit(self, v) -> str:
        return _lit(v, self.dt)

    def m(self, fn: str) -> str:  # the libm function for this dtype
        return libm(fn, self.dt)


def _abs(c: Operands) -> str:
    if c.fl:
        return f"{c.m('fabs')}({c.a})"
    if c.dt.kind in "ub":
        return f"({c.a})"
    return f"({{ {c.t} v_ = ({c.a}); ({c.t})(v_ < 0 ? -v_ : v_); }})"


def _div(c: Operands) -> str:
    x, y = c.args[0], c.args[1]
    if c.fl:
        return f"(({x}) / ({y}))"
    return f"{'NNOS_UDIV' if c.dt.kind in 'ub' else 'NNOS_IDIV'}(({c.t})({x}), ({c.t})({y}))"


def _mod(c: Operands) -> str:
    x, y, fmod = c.args[0], c.args[1], int(c.attrs.get("fmod", 0))
    if c.fl:
        return f"{c.m('fmod')}({x}, {y})" if fmod else f"{'nnos_modd' if c.t == 'double' else 'nnos_modf'}({x}, {y})"
    if c.dt.kind in "ub":
        return f"NNOS_UMOD(({c.t})({x}), ({c.t})({y}))"
    return f"{'NNOS_IFMOD' if fmod else 'NNOS_IMOD'}(({c.t})({x}), ({c.t})({y}))"


def _pow(c: Operands) -> str:
    x, y = c.args[0], c.args[1]
    if c.fl:
        return f"{c.m('pow')}({x}, ({c.t})({y}))"
    return f"(({c.t}){'nnos_upow' if c.dt.kind in 'ub' else 'nnos_ipow'}({x}, ({c.t})({y})))"


def _fold(name: str):
    def f(c: Operands) -> str:               # Max and Min over any number of inputs
        out = f"({c.args[0]})"
        for b in c.args[1:]:
            out = f"NNOS_{name}({out}, ({c.t})({b}))"
        return out
    return f


def _clip(c: Operands) -> str:
    """Bounds as operands, or (a fused epilogue's constant bounds) as attributes."""
    v = f"({c.a})"
    lo = c.args[1] if len(c.args) > 1 and c.args[1] else (c.lit(c.attrs["min"]) if "min" in c.attrs else "")
    hi = c.args[2] if len(c.args) > 2 and c.args[2] else (c.lit(c.attrs["max"]) if "max" in c.attrs else "")
    if lo:
        v = f"NNOS_MAX({v}, ({c.t})({lo}))"
    if hi:
        v = f"NNOS_MIN({v}, ({c.t})({hi}))"
    return v


def _cast(c: Operands) -> str:
    return f"(({c.a}) != 0)" if c.out.kind == "b" else f"(({compute(c.out)})({c.a}))"


def _binary(sym: str, keep_type: bool = True):
    def f(c: Operands) -> str:
        e = f"(({c.args[0]}) {sym} ({c.args[1]}))"
        return f"(({c.t}){e})" if keep_type else e
    return f


def quantize_expr(c) -> str:
    """QuantizeLinear on C operands (scalar.OPS_C's entry): divide in the pair's type, round
    half to even, add the zero point, saturate (NaN → the low bound, as the reference's)."""
    x, s, z = (c.args + ["", ""])[:3]
    cd = np.dtype(c.attrs["compute"])
    ct = compute(cd)
    lo, hi = (literal(v, cd) for v in QUANT[np.dtype(c.attrs.get("quantized", c.out))])   # its own type, in a chain
    half = "q_ = (float)(_Float16)q_; " if cd == np.float16 else ""
    zp = f" + ({ct})({z})" if z else ""
    return (f"({{ {ct} q_ = ({ct})({x}) / ({ct})({s}); {half}q_ = {libm('rint', cd)}(q_){zp}; "
            f"q_ = q_ > {lo} ? q_ : {lo}; q_ < {hi} ? q_ : {hi}; }})")


def dequantize_expr(c) -> str:
    """DequantizeLinear: (float32(x) − float32(zero point)) × scale, in float32."""
    x, s, z = (c.args + ["", ""])[:3]
    zp = f" - (float)({z})" if z else ""
    return f"(((float)({x}){zp}) * (float)({s}))"


def fake_quantize_expr(c) -> str:
    """nnos.QuantizeDequantize: QuantizeLinear's expression and DequantizeLinear's on its value,
    the grid the zero point's type (``to``), in float32 (the quantized value is an integer in it)."""
    x, s, z = c.args
    lo, hi = (literal(v, np.float32) for v in QUANT[grid_dtype(c.attrs)])
    return (f"({{ float s_ = (float)({s}), z_ = (float)({z}); float q_ = rintf((float)({x}) / s_) + z_; "
            f"q_ = q_ > {lo} ? q_ : {lo}; q_ = q_ < {hi} ? q_ : {hi}; (q_ - z_) * s_; }})")


# The op → C expression table (the generic loops' and the fused chains' element form): one entry
# per op, overridable like any dict — a new op is one line here, checked by the conformance tests.
OPS_C = {
    **{op: (lambda c, fn=fn: f"{c.m(fn)}({c.a})") for op, fn in UNARY_FLOAT.items()},
    "Identity": lambda c: f"({c.a})",
    "Neg": lambda c: f"(({c.t})(-({c.a})))",
    "Abs": _abs,
    "Reciprocal": lambda c: f"({c.lit(1)} / ({c.a}))",
    "Relu": lambda c: f"({{ {c.t} v_ = ({c.a}); v_ < {c.lit(0)} ? {c.lit(0)} : v_; }})",
    "LeakyRelu": lambda c: f"({{ {c.t} v_ = ({c.a}); v_ < {c.lit(0)} ? v_ * {c.lit(c.attrs.get('alpha', 0.01))} : v_; }})",
    "Elu": lambda c: (f"({{ {c.t} v_ = ({c.a}); v_ < {c.lit(0)} ? "
                      f"{c.lit(c.attrs.get('alpha', 1.0))} * {c.m('expm1')}(v_) : v_; }})"),
    "Sigmoid": lambda c: f"({c.lit(0.5)} * {c.m('tanh')}({c.lit(0.5)} * ({c.a})) + {c.lit(0.5)})",
    "HardSigmoid": lambda c: _hard_sigmoid(c.a, c.dt, c.attrs.get("alpha", 0.2), c.attrs.get("beta", 0.5)),
    "HardSwish": lambda c: f"({{ {c.t} x_ = ({c.a}); x_ * {_hard_sigmoid('x_', c.dt, 1.0 / 6.0, 0.5)}; }})",
    "Softplus": lambda c: (f"({{ {c.t} x_ = ({c.a}); (x_ < {c.lit(0)} ? {c.lit(0)} : x_) + "
                           f"{c.m('log1p')}({c.m('exp')}(-{c.m('fabs')}(x_))); }})"),
    "Gelu": _gelu,
    "Mish": lambda c: (f"({{ {c.t} x_ = ({c.a}); x_ * {c.m('tanh')}((x_ < {c.lit(0)} ? {c.lit(0)} : x_) + "
                       f"{c.m('log1p')}({c.m('exp')}(-{c.m('fabs')}(x_)))); }})"),
    "Add": _binary("+"), "Sub": _binary("-"), "Mul": _binary("*"),
    "Div": _div, "Mod": _mod, "Pow": _pow, "Max": _fold("MAX"), "Min": _fold("MIN"),
    "Equal": _binary("==", False), "Greater": _binary(">", False), "Less": _binary("<", False),
    "GreaterOrEqual": _binary(">=", False), "LessOrEqual": _binary("<=", False),
    "And": _binary("&&", False), "Or": _binary("||", False), "Xor": _binary("!=", False),
    "Not": lambda c: f"(!({c.a}))",
    "Clip": _clip,
    "Where": lambda c: f"(({c.args[0]}) ? ({c.args[1]}) : ({c.args[2]}))",
    "Cast": _cast,
    "QuantizeLinear": quantize_expr, "DequantizeLinear": dequantize_expr, FAKE_QUANT: fake_quantize_expr,
}
SUPPORTED = set(OPS_C)


def expr(op: str, args: list[str], in_dtype, out_dtype, attrs: dict) -> str:
    """The C expression of ``op`` on ``args`` (KeyError for an op the table lacks)."""
    return OPS_C[op](Operands(list(args), np.dtype(in_dtype), np.dtype(out_dtype if out_dtype is not None else in_dtype),
                              attrs))
