"""Every elementwise op as one scalar C expression, with numpy's semantics (the reference):
NaN propagates through max/min/relu/clip, integer division truncates and a zero divisor gives
0, Mod follows the divisor's sign unless fmod=1, integer overflow wraps.

``expr(op, args, in_dtype, out_dtype, attrs)``: ``args`` are C expressions already in
``in_dtype``'s compute type; the result is in ``out_dtype``'s compute type. The statement
expressions (``({ ... })``) evaluate each argument once.
"""
from __future__ import annotations

import numpy as np

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

UNARY_FLOAT = {"Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Tanh": "tanh"}


def _lit(v, dt):
    return literal(v, dt)


def _hard_sigmoid(x, dt, alpha, beta):
    one, zero = _lit(1, dt), _lit(0, dt)
    return (f"({{ {compute(dt)} h_ = {_lit(alpha, dt)} * ({x}) + {_lit(beta, dt)}; "
            f"h_ = h_ < {zero} ? {zero} : h_; h_ > {one} ? {one} : h_; }})")


def expr(op: str, args: list[str], in_dtype, out_dtype, attrs: dict) -> str:
    dt = np.dtype(in_dtype)
    t = compute(dt)
    fl = is_float(dt)
    a = args[0] if args else ""
    if op in UNARY_FLOAT:
        return f"{libm(UNARY_FLOAT[op], dt)}({a})"
    if op == "Identity":
        return f"({a})"
    if op == "Neg":
        return f"(({t})(-({a})))"
    if op == "Abs":
        if fl:
            return f"{libm('fabs', dt)}({a})"
        if dt.kind == "u" or dt.kind == "b":
            return f"({a})"
        return f"({{ {t} v_ = ({a}); ({t})(v_ < 0 ? -v_ : v_); }})"
    if op == "Reciprocal":
        return f"({_lit(1, dt)} / ({a}))"
    if op == "Relu":
        return f"({{ {t} v_ = ({a}); v_ < {_lit(0, dt)} ? {_lit(0, dt)} : v_; }})"
    if op == "LeakyRelu":
        al = _lit(attrs.get("alpha", 0.01), dt)
        return f"({{ {t} v_ = ({a}); v_ < {_lit(0, dt)} ? v_ * {al} : v_; }})"
    if op == "Elu":
        al = _lit(attrs.get("alpha", 1.0), dt)
        return f"({{ {t} v_ = ({a}); v_ < {_lit(0, dt)} ? {al} * {libm('expm1', dt)}(v_) : v_; }})"
    if op == "Sigmoid":
        h = _lit(0.5, dt)
        return f"({h} * {libm('tanh', dt)}({h} * ({a})) + {h})"
    if op == "HardSigmoid":
        return _hard_sigmoid(a, dt, attrs.get("alpha", 0.2), attrs.get("beta", 0.5))
    if op == "HardSwish":
        return f"({{ {t} x_ = ({a}); x_ * {_hard_sigmoid('x_', dt, 1.0 / 6.0, 0.5)}; }})"
    if op == "Softplus":
        return (f"({{ {t} x_ = ({a}); (x_ < {_lit(0, dt)} ? {_lit(0, dt)} : x_) + "
                f"{libm('log1p', dt)}({libm('exp', dt)}(-{libm('fabs', dt)}(x_))); }})")
    if op in ("Add", "Sub", "Mul"):
        sym = {"Add": "+", "Sub": "-", "Mul": "*"}[op]
        return f"(({t})(({args[0]}) {sym} ({args[1]})))"
    if op == "Div":
        if fl:
            return f"(({args[0]}) / ({args[1]}))"
        return f"{'NNOS_UDIV' if dt.kind in 'ub' else 'NNOS_IDIV'}(({t})({args[0]}), ({t})({args[1]}))"
    if op == "Mod":
        fmod = int(attrs.get("fmod", 0))
        if fl:
            if fmod:
                return f"{libm('fmod', dt)}({args[0]}, {args[1]})"
            return f"{'nnos_modd' if t == 'double' else 'nnos_modf'}({args[0]}, {args[1]})"
        if dt.kind in "ub":
            return f"NNOS_UMOD(({t})({args[0]}), ({t})({args[1]}))"
        return f"{'NNOS_IFMOD' if fmod else 'NNOS_IMOD'}(({t})({args[0]}), ({t})({args[1]}))"
    if op == "Pow":
        if fl:
            return f"{libm('pow', dt)}({args[0]}, ({t})({args[1]}))"
        fn = "nnos_upow" if dt.kind in "ub" else "nnos_ipow"
        return f"(({t}){fn}({args[0]}, ({t})({args[1]})))"
    if op in ("Max", "Min"):
        out = f"({args[0]})"
        for b in args[1:]:
            out = f"NNOS_{op.upper()}({out}, ({t})({b}))"
        return out
    if op in ("Equal", "Greater", "Less"):
        sym = {"Equal": "==", "Greater": ">", "Less": "<"}[op]
        return f"(({args[0]}) {sym} ({args[1]}))"
    if op == "Clip":
        v = f"({a})"
        if len(args) > 1 and args[1]:
            v = f"NNOS_MAX({v}, ({t})({args[1]}))"
        if len(args) > 2 and args[2]:
            v = f"NNOS_MIN({v}, ({t})({args[2]}))"
        return v
    if op == "Where":
        return f"(({args[0]}) ? ({args[1]}) : ({args[2]}))"
    if op == "Cast":
        od = np.dtype(out_dtype)
        if od.kind == "b":
            return f"(({a}) != 0)"
        return f"(({compute(od)})({a}))"
    raise KeyError(op)


SUPPORTED = {*UNARY_FLOAT, "Identity", "Neg", "Abs", "Reciprocal", "Relu", "LeakyRelu", "Elu", "Sigmoid",
             "HardSigmoid", "HardSwish", "Softplus", "Add", "Sub", "Mul", "Div", "Mod", "Pow", "Max", "Min",
             "Equal", "Greater", "Less", "Clip", "Where", "Cast"}
