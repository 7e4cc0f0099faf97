"""A table lookup whose only reader is a QuantizeLinear, as a table of that QuantizeLinear's
bytes: a QDQ transformer's GELU (an ``nnos.Lookup`` of 256 floats, passes/lookup.py) feeds the
next product's QuantizeLinear, so the lookup's pass stores each value's byte straight from a
256-byte table — on AVX-512 VBMI two byte permutes of four registers a 16 values, where the
float table took eight float permutes and seven masked moves, and the QuantizeLinear a pass of
its own (act_s qdq_u8's feed-forward: 2.9 + 0.43 µs a layer).

The bytes are the QuantizeLinear's of the table's entries, by the reference at compile time,
so the object's outputs are bitwise the unfused ones. Taken by the vector pass after a chain's
first part (``after_pass``) when qstore.py chose the pair and the target has 16-float vectors.
"""
from __future__ import annotations

import numpy as np

from ...ops import evaluate
from ...ops.lookup import LOOKUP
from .ctype import literal
from .elementwise import _fakeq_terms, _rounds_for
from .emit import indent
from .qstore import streams

# a helper in the source of a plan that uses it (prelude's size decides gcc's -O level: toolchain)
HELPER = r"""/* a rounding to the grid of s (bounds qlo, qhi), then its index into a table over [lo, hi]
   (vlookupq's) */
static inline vi vgridindexq(vf x, float s, float qlo, float qhi, float lo, float hi) {
    vf t = vclampq(x / s, qlo, qhi);
    t = vclampq((t + 12582912.0f) - 12582912.0f, lo, hi);
    return __builtin_convertvector(t - lo, vi);
}
static inline int sgridindex(float x, float s, float lo, float hi) {
    float t = sclampq(x / s, lo, hi);
    return (int)(((t + 12582912.0f) - 12582912.0f) - lo);
}
/* the 16 bytes at indices k (0..255) of a 256-byte table held in four registers: a permute of
   each half by the index's low 7 bits, the half picked by bit 7 */
#if VW == 16 && defined(__AVX512VBMI__)
static inline void vlookup_bytes(uint8_t *dst, vi k, __m512i t0, __m512i t1, __m512i t2, __m512i t3) {
    const __m512i b = _mm512_castsi128_si512(_mm512_cvtepi32_epi8((__m512i)k));
    const __m512i r = _mm512_mask_mov_epi8(_mm512_permutex2var_epi8(t0, b, t1),
                                           _mm512_test_epi8_mask(b, _mm512_set1_epi8((char)0x80)),
                                           _mm512_permutex2var_epi8(t2, b, t3));
    _mm_storeu_si128((__m128i *)dst, _mm512_castsi512_si128(r));
}
#endif
"""


def _byte_table(prog, lookup_args: list[str], q) -> np.ndarray:
    """The QuantizeLinear's bytes of each table entry (by the reference), padded to 256."""
    node = prog.graph.nodes[q.step]
    consts = [prog.graph.consts.get(i) if i else None for i in node.inputs[1:]]
    table = prog.graph.consts[lookup_args[2]].reshape(-1)
    out = np.zeros(256, np.uint8)
    out[:table.size] = evaluate(node, [table] + consts)[0].view(np.uint8)
    return out


def after_pass(prog, out: str, steps) -> str | None:
    """The C of a chain's vector pass over float32 ``out`` when it is a lookup (after a rounding
    to its grid, or alone) whose QuantizeLinear qstore.py chose to store here; else None."""
    rounding = len(steps) == 2 and _rounds_for(prog, steps[0], steps[1])
    lookup = steps[-1]
    if prog.vw != 16 or lookup[0] != LOOKUP or len(steps) != 1 + rounding \
            or prog.type(lookup[1][2]).size > 256 or (rounding and steps[0][1][0] != "@v") or lookup[1][0] != "@v":
        return None
    q = prog.qstores.get(out)
    if q is None or not streams(prog, q.out, out):
        return None
    q = prog.quantized_store(out, late=True)
    if HELPER not in prog.helpers:
        prog.helpers.append(HELPER)
    n = prog.type(out).size
    lo, size = int(lookup[2]["lo"]), prog.type(lookup[1][2]).size
    s = literal(prog.graph.consts[lookup[1][1]].reshape(()), np.float32)
    bounds = f"{literal(lo, np.float32)}, {literal(lo + size - 1, np.float32)}"
    if rounding:
        rs, qlo, qhi = _fakeq_terms(prog, steps[0][1][1:3], steps[0][2])
        vindex = f"vgridindexq(vload(O + i), {rs}, {qlo}, {qhi}, {bounds})"
        sindex = f"sgridindex(sfakeq(O[i], {rs}, {qlo}, {qhi}), {s}, {bounds})"
    else:
        vindex = f"vgridindex(vload(O + i), {s}, {bounds})"
        sindex = f"sgridindex(O[i], {s}, {bounds})"
    table = prog.const(f"{lookup[1][2]}:bytes@{q.out}", _byte_table(prog, lookup[1], q), None)
    return indent("\n".join([
        f"{{ const float *O = {prog.tensor(out)}; uint8_t *Q = (uint8_t *){prog.ptr(q.out)}; "
        f"const uint8_t *TB = {table}; long i = 0;",
        "#if VW == 16 && defined(__AVX512VBMI__)",
        "{ __m512i t0, t1, t2, t3; memcpy(&t0, TB, 64); memcpy(&t1, TB + 64, 64); memcpy(&t2, TB + 128, 64); "
        "memcpy(&t3, TB + 192, 64);",
        f"  for (; i + VW <= {n}; i += VW) vlookup_bytes(Q + i, {vindex}, t0, t1, t2, t3); }}",
        "#endif",
        f"for (; i + VW <= {n}; i += VW) {{ vi k = {vindex}; for (int l = 0; l < VW; l++) Q[i + l] = TB[k[l]]; }}",
        f"for (; i < {n}; i++) Q[i] = TB[{sindex}]; }}"]))
