"""Quantizing stores: a step whose float32 output only a later step's QuantizeLinear reads
stores the quantized bytes itself — the QDQ form's depthwise convolution writes uint8,
not a float tensor four times its size that the next step reads once.

``choose`` finds those pairs; a kernel that can quantize in registers asks ``Program.
quantized_store`` for its output and stores through ``QStore.store``, and the QuantizeLinear's
step runs as nothing; for one that does not ask, the QuantizeLinear runs as before. The values
are QuantizeLinear's exactly (the same division, rounding half to even and saturation), so the
object's outputs are bitwise the unfused ones. (The generic loops were tried as producers too:
gcc -O2 vectorizes a loop that ends in a byte store four floats at a time, and int8 cnn_l's
dequantized chains took 7.6 µs where the two loops took 2.0.)

Writing the quantized tensor during the producer's step is safe when its arena bytes overlap
nothing that the steps from the producer's up to the QuantizeLinear's read or write: the memory
plan only promised them free from the QuantizeLinear's step on (or, for a pass that runs after
the producer has read all its operands, nothing the steps after it touch: ``QStore.late``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ops.quant import QUANT
from .ctype import literal


# a helper in the source of a plan that uses it (prelude's size decides gcc's -O level: toolchain)
HELPER = r"""/* QuantizeLinear of each lane to n bytes (uint8, or int8's bit pattern): x / s clamped to the
   type's bounds less the zero point (lo, hi; the prelude's vclampq: NaN to lo), rounded half to
   even, plus the zero point z — the scalar quantize's value exactly. On x86 rounded by cvtps2dq
   (the default mode, to nearest even) and narrowed by vpmovdb or a byte shuffle: a
   QuantizeLinear of 16 384 floats took 1.4 µs (AVX-512) and 3.1 µs (AVX2) in the vector-
   extension form below, 0.85 and 1.9 µs so. Elsewhere each lane's low byte is picked by a byte
   shuffle below 16 lanes. */
static inline void vquant_store(void *dst, vf x, float s, float lo, float hi, float z, int n) {
    vf t = vclampq(x / s, lo, hi);
#if VW == 16 && defined(__AVX512F__)
    __m128i b = _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32((__m512)t), _mm512_set1_epi32((int)z)));
    if (n == 16) _mm_storeu_si128((__m128i *)dst, b); else memcpy(dst, &b, n);
#elif VW == 8 && defined(__AVX2__)
    __m256i i = _mm256_add_epi32(_mm256_cvtps_epi32((__m256)t), _mm256_set1_epi32((int)z));
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));   /* fits: −128..255 */
    __m128i b = _mm_shuffle_epi8(w, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1));
    if (n == 8) _mm_storel_epi64((__m128i *)dst, b); else memcpy(dst, &b, n);
#else
    t = ((t + 12582912.0f) - 12582912.0f) + z;
#if VW == 16
    typedef uint8_t vu8 __attribute__((vector_size(VW)));
    vu8 b = __builtin_convertvector(__builtin_convertvector(t, vi), vu8);
#else
    typedef uint8_t vb4 __attribute__((vector_size(VW * 4)));
    vb4 b = __builtin_shuffle((vb4)__builtin_convertvector(t, vi), (vb4){0, 4, 8, 12, 16 % (VW * 4), 20 % (VW * 4),
                                                                          24 % (VW * 4), 28 % (VW * 4)});
#endif
    memcpy(dst, &b, n);
#endif
}
"""


@dataclass(frozen=True)
class QStore:
    out: str            # the QuantizeLinear's output tensor
    step: int           # the QuantizeLinear's step
    scale: float
    zero: int
    lo: int             # the type's bounds
    hi: int
    late: bool = False  # the bytes overlap the producer's operands: only a pass after it has read
                        # them all may store them (qlookup.after_pass)

    def store(self, at: str, value: str, n: int | str) -> str:
        """C that stores the ``n`` first lanes of vector ``value`` quantized at ``at``."""
        return (f"vquant_store({at}, {value}, {literal(self.scale, np.float32)}, "
                f"{literal(self.lo - self.zero, np.float32)}, {literal(self.hi - self.zero, np.float32)}, "
                f"{literal(self.zero, np.float32)}, {n});")


def _scalar(graph, name: str):
    return graph.consts[name].reshape(()) if name in graph.consts and graph.consts[name].size == 1 else None


def _quantizer(graph, node) -> tuple | None:
    """(scale, zero point, type) of a QuantizeLinear by one constant float32 scale to uint8 or int8."""
    if node.op != "QuantizeLinear" or node.epilogue or len(node.inputs) < 2:
        return None
    s = _scalar(graph, node.inputs[1])
    zname = node.inputs[2] if len(node.inputs) > 2 else ""
    z = _scalar(graph, zname) if zname else np.uint8(0)
    out = np.dtype(graph.type_of(node.outputs[0]).dtype)
    if s is None or z is None or s.dtype != np.float32 or out not in (np.dtype(np.uint8), np.dtype(np.int8)):
        return None
    if graph.type_of(node.inputs[0]).dtype != np.float32 or not np.isfinite(s) or s == 0:
        return None
    return float(s), int(z), out


def _span(prog, name: str) -> tuple[int, int] | None:
    if name in prog.graph.consts or name not in prog.mem.tensors:
        return None
    off = prog.mem.tensors[name]
    return off, off + prog.graph.type_of(name).nbytes


def disjoint(prog, out: str, reads: list[str]) -> bool:
    a = _span(prog, out)
    return a is not None and all(b is None or b[1] <= a[0] or a[1] <= b[0] for b in map(lambda n: _span(prog, n), reads))


def streams(prog, out: str, floats: str) -> bool:
    """Whether a pass reading float32 tensor ``floats`` element by element in order may store
    element i's byte at ``out`` + i as it goes: the two apart, or ``out`` at the floats' start
    (byte i then lands in float i / 4, read already)."""
    a, b = _span(prog, out), _span(prog, floats)
    return a is not None and b is not None and (a[0] == b[0] or disjoint(prog, out, [floats]))


def choose(prog, skip: set) -> dict[str, QStore]:
    """The float32 tensors whose producer may store their QuantizeLinear's output instead, by
    name; each such QuantizeLinear's step added to ``skip`` (codegen takes it out again when
    the producer's kernel stored float32). The QuantizeLinear need not be the very next step
    (a ResNet block's skip branch is often scheduled between): its bytes must then overlap
    nothing that a step from the producer's to it reads or writes. (Another QuantizeLinear stored
    early by a step in between is chosen later, and its own range holds this one's step.) Bytes
    over the producer's own operands are ``late``: for a pass after they are all read."""
    g, chosen = prog.graph, {}
    consumers = g.consumers()
    index = {id(n): k for k, n in enumerate(g.nodes)}
    for s, node in enumerate(g.nodes):
        if s in skip or len(node.outputs) != 1 or node.outputs[0] in g.outputs:
            continue
        readers = consumers.get(node.outputs[0], [])
        q = readers[0] if len(readers) == 1 else None
        params = _quantizer(g, q) if q is not None and q.inputs[0] == node.outputs[0] else None
        t = index[id(q)] if params is not None else -1
        if t <= s or t in skip:
            continue
        between = []
        for u in range(s + 1, t):
            between += g.nodes[u].all_inputs() + g.nodes[u].outputs
        if not disjoint(prog, q.outputs[0], [r for r in between if r]):
            continue
        late = not disjoint(prog, q.outputs[0], [i for i in node.all_inputs() if i])
        scale, zero, dt = params
        lo, hi = QUANT[dt]
        chosen[node.outputs[0]] = QStore(q.outputs[0], t, scale, zero, int(lo), int(hi), late)
        skip.add(t)
    return chosen
