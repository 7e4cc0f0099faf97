"""float32 Softmax over contiguous rows (attention's scores), in vectors: the max, exp(x − max)
and its sum, then a scale by 1/sum, each a pass with a scalar tail, ROWS rows at a time
(reduce.softmax takes every other Softmax). The max is one maxps a vector, blind to NaN: a NaN
on the row, or a max of ±∞ (x − M is then NaN: ∞ − ∞), is a NaN exp whose sum makes the whole
row NaN, as in the reference (the max pass's NaN tests and exp's edges cost a fifth of act_s's
softmax: 5.6 → 4.55 µs for 260 rows of 65).

A QDQ model's scores arrive rounded to the 8-bit grid of one scale s (the product's
QuantizeLinear → DequantizeLinear, ``nnos.QuantizeDequantize`` at the end of its chain): then
x − max is −d·s for an integer d in [0, 255], and exp(−d·s) is the product of two entries of
16-entry tables, exp(−16·s·(d >> 4)) · exp(−s·(d & 15)), picked by permutes from registers —
no polynomial, no range checks (the values are finite: the rounding sends NaN to the grid).
Where exp(−255·s) is a normal float32, the grid's top value stands for each row's max (the
same softmax; d still in [0, 255]) and the max pass is skipped.
"""
from __future__ import annotations

import numpy as np

from ...ops.quant import FAKE_QUANT, QUANT, grid_dtype
from .ctype import literal
from .elementwise import apply, rounded
from .emit import indent

ROWS = 4      # rows a group interleaves: each row's passes are a chain of dependent steps

# a helper in the source of a plan that uses it (prelude's size decides gcc's -O level: toolchain)
HELPER = r"""/* exp(x − M) for x ≤ M on the grid of one scale s, from g = M − x and 1/s: d = rint(g/s) is
   the integer d in [0, 255] exactly (x and M are s·k rounded once each: the error in g/s is
   below 2^-24·1020 ≪ 1/2), and exp(−d·s) = T[d >> 4]·T[16 + (d & 15)], the table's entries
   exp(−16·s·h) and exp(−s·l) rounded from float64 (the product within 1.5 ulp of exp(−d·s)).
   T: the 32 floats as vectors, loaded once before the rows. */
#if VW == 8 && defined(__AVX2__)
/* entry k & 15 of the 16 in a, b: a permute of each, the pick by bit 3 (a blend by sign bits) */
static inline __m256 vperm16(vi k, vf a, vf b) {
    __m256i i = (__m256i)k;
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps((__m256)a, i), _mm256_permutevar8x32_ps((__m256)b, i),
                            (__m256)_mm256_slli_epi32(i, 28));
}
#endif
static inline __attribute__((always_inline)) vf vexp_grid(vf g, vf inv, const vf *T) {
    vi d = (vi)(g * inv + 12582912.0f) - 0x4B400000;
    vi h = (d >> 4) & 15, l = d & 15;
#if VW == 16 && defined(__AVX512F__)
    return (vf)_mm512_permutexvar_ps((__m512i)h, (__m512)T[0]) * (vf)_mm512_permutexvar_ps((__m512i)l, (__m512)T[1]);
#elif VW == 8 && defined(__AVX2__)
    return (vf)vperm16(h, T[0], T[1]) * (vf)vperm16(l, T[2], T[3]);
#else
    const float *t = (const float *)T;
    vf r;
    for (int j = 0; j < VW; j++) r[j] = t[h[j]] * t[16 + l[j]];
    return r;
#endif
}
static inline float sexp_grid(float g, float inv, const float *t) {
    int d = (int)((g * inv + 12582912.0f) - 12582912.0f);
    return t[(d >> 4) & 15] * t[16 + (d & 15)];
}
"""


# exp(d) for d = x − M, M the row's max: d ≤ 0, or NaN where the row has a NaN or M is ±∞.
# vexp less its clamp at the top and its ∞ and NaN edges (on AVX-512 three compares and masked
# moves a vector): below lo (denormal results) 0, as vexp; a NaN passes as a NaN
EXP_HELPER = r"""static inline __attribute__((always_inline)) vf vexp_nonpos(vf d) {
    const float lo = -87.3365478515625f;
    const vf y = vexp_within(vsel(d < lo, vsplat(lo), d));
    return vsel(d < lo, vsplat(0.0f), y);
}
"""


def input_grid(prog, x: str) -> tuple[float, float] | None:
    """The 8-bit grid ``x``'s producer rounds it to last (the end of its chain is a rounding by
    one constant scale and zero point): its scale s and its top value (qmax − z)·s as float32
    computes it, or None."""
    node = prog.graph.producers().get(x)
    if node is None or len(node.outputs) != 1:
        return None
    last = node.epilogue[-1] if node.epilogue else node
    args = (last.operands if node.epilogue else last.inputs[1:])[:2]
    if last.op != FAKE_QUANT or len(args) != 2 or not all(a in prog.graph.consts for a in args):
        return None
    scale, zero = (prog.graph.consts[a] for a in args)
    if scale.size != 1 or scale.dtype != np.float32 or zero.size != 1:
        return None
    s = np.float32(scale.reshape(()))
    top = np.float32(np.float32(QUANT[grid_dtype(last.attrs)][1] - int(zero.reshape(()))) * s)
    return (float(s), float(top)) if np.isfinite(s) and s > 0 and np.isfinite(top) else None


def _tables(s: float) -> np.ndarray:
    """exp(−16·s·h) and exp(−s·l) for h, l in 0..15, each rounded once from float64."""
    k = np.arange(16, dtype=np.float64)
    return np.concatenate([np.exp(-16.0 * s * k), np.exp(-s * k)]).astype(np.float32)


class _Exp:
    """exp(x − M) in a row's passes: vexp, or the grid's tables (``grid``: the scale and the top
    value). ``top``: M, the grid's top value in place of the row's max (softmax is the same for
    any M; the tables cover M − x = d·s for every d in [0, 255]) where exp(−255·s) stays a
    normal float32 (255·s ≤ 80), so the rows' max pass is skipped; else None."""
    def __init__(self, prog, grid: tuple[float, float] | None):
        self.vw = prog.vw
        self.grid = grid[0] if grid is not None else None
        self.top = grid[1] if grid is not None and 255 * grid[0] <= 80 else None
        if self.grid is not None:
            if HELPER not in prog.helpers:
                prog.helpers.append(HELPER)
            self.table = prog.const(f"softmax_grid:{self.grid!r}", _tables(self.grid))
            self.inv = literal(np.float32(1.0) / np.float32(self.grid), np.float32)
        elif EXP_HELPER not in prog.helpers:
            prog.helpers.append(EXP_HELPER)

    def setup(self) -> list[str]:
        if self.grid is None:
            return []
        return [f"const float *GT = {self.table}; vf GT_[32 / VW]; "
                "for (int t = 0; t < 32 / VW; t++) GT_[t] = vload(GT + t * VW);",
                f"const vf ginv = vsplat({self.inv});"]

    def vector(self, x: str, m: str) -> str:
        return f"vexp_nonpos({x} - {m})" if self.grid is None else f"vexp_grid({m} - {x}, ginv, GT_)"

    def tail(self, n: int, rows: int, each) -> list[str]:
        """The rows' values after their last whole vector (from i): exp(x − M) into y and each
        row's sum. On the grid a scalar loop (two table entries a value). Else, where the rows'
        tails fit one vector, that vector built in registers lane by lane, one vexp_nonpos (a
        libm expf a value: act_s's 260 rows of 65, 4.43 → 4.26 µs; the tails stored to memory
        and loaded as a vector stalled the load, 6.1); else expf a value."""
        t = n % self.vw
        if t == 0:
            return []
        if self.grid is not None or rows * t > self.vw:
            e = f"sexp_grid(M@ - x@[j], {self.inv}, GT)" if self.grid is not None else "expf(x@[j] - M@)"
            return [f"  for (long j = i; j < {n}; j++) {{ " + each(f"{{ float e = {e}; y@[j] = e; S@ += e; }}") + " }"]
        lanes = [f"t_[@ * {t} + {j}] = x@[i + {j}] - M@;" for j in range(t)]
        sums = [f"y@[i + {j}] = t_[@ * {t} + {j}]; S@ += t_[@ * {t} + {j}];" for j in range(t)]
        return ["  { vf t_ = vsplat(0.0f); " + " ".join(each(c) for c in lanes) + " t_ = vexp_nonpos(t_);",
                "    " + " ".join(each(c) for c in sums) + " }"]


def _group(n: int, rows: int, chain, exp: _Exp) -> list[str]:
    """``rows`` rows from row ``o`` on, their passes interleaved statement by statement (a
    short row's max, exp and sum are one long dependency chain; its neighbours' hide it); the
    epilogue ``chain`` applied in the last pass. The values after the last whole vector are a
    tail: a row's extra vector (overlapping, or masked) cost more than scalar work, the vector
    units being what the passes wait on (a 65-long row: 8.2 against 7.4 µs); the exp of the
    group's tails together is one vector built in registers where they fit (``_Exp.tail``)."""
    def each(c: str) -> str:          # "@": the row's number in the group
        return " ".join(c.replace("@", str(r)) for r in range(rows))
    if exp.top is not None:               # the grid's top for M: no max pass
        top = literal(np.float32(exp.top), np.float32)
        first = ["{ " + each(f"const float *x@ = X + (o + @) * {n}; float *y@ = Y + (o + @) * {n};"),
                 "  long i = 0; " + each(f"const float M@ = {top};")]
    else:
        first = [
            "{ " + each(f"const float *x@ = X + (o + @) * {n}; float *y@ = Y + (o + @) * {n};"),
            "  long i = 0; " + each("vf m@ = vsplat(x@[0]);"),
            f"  for (; i + VW <= {n}; i += VW) {{ " + each("m@ = vmaxnan(vload(x@ + i), m@);") + " }",
            "  " + each("float M@ = x@[0]; { float v = vhmax(m@); M@ = v > M@ ? v : M@; }"),
            f"  for (long j = i; j < {n}; j++) {{ " + each("{ float v = x@[j]; M@ = v > M@ ? v : M@; }") + " }"]
    return [
        *first,
        "  " + each("vf s@ = vsplat(0.0f), mm@ = vsplat(M@);"),
        f"  for (i = 0; i + VW <= {n}; i += VW) {{ "
        + each(f"vf e@ = {exp.vector('vload(x@ + i)', 'mm@')}; vstore(y@ + i, e@); s@ += e@;") + " }",
        "  " + each("float S@ = vhsum(s@);"),
        *exp.tail(n, rows, each),
        "  " + each("float inv@ = 1.0f / S@;"),
        f"  for (i = 0; i + VW <= {n}; i += VW) {{ "
        + each(f"vstore(y@ + i, {_scaled(chain, 'vload(y@ + i)', 'inv@', True)});") + " }",
        f"  for (long j = i; j < {n}; j++) {{ " + each(f"y@[j] = {_scaled(chain, 'y@[j]', 'inv@', False)};") + " } }"]


def _scaled(chain, value: str, inv: str, vector: bool) -> str:
    """``value`` times 1/sum (the float ``inv``), then the chain: a first rounding by a
    reciprocal takes 1/sum into its own product (one multiply a vector, not two)."""
    if chain and isinstance(chain[0], tuple) and chain[0][0] == FAKE_QUANT and chain[0][4]:
        return apply(chain[1:], rounded(chain[0], value, vector, inv), vector)
    return apply(chain, f"{value} * {'vsplat(' + inv + ')' if vector else inv}", vector)


def rows(prog, x: str, y: str, count: int, n: int, chain) -> str:
    """Softmax over ``count`` contiguous rows of ``n``, the epilogue ``chain`` applied in the
    last pass. On a team, each thread its own rows (an exp costs about what eight
    multiply-adds do)."""
    exp = _Exp(prog, input_grid(prog, x) if prog.vw in (8, 16) else None)
    split = prog.share(count * n * 8, count)
    lo, hi = ("lo", "hi") if split else ("0", str(count))
    return indent("\n".join([
        f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)};",
        *([split] if split else []),
        *exp.setup(),
        f"long o = {lo};",
        f"for (; o + {ROWS} <= {hi}; o += {ROWS})",
        *_group(n, ROWS, chain, exp),
        f"for (; o < {hi}; o++)",
        *_group(n, 1, chain, exp)]))
