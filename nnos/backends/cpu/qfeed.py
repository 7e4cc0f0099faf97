"""A dynamically quantized input stored padded for its convolutions (AVX-512 VNNI).

A dynamically quantized model quantizes each activation in a step of its own (QuantizeLinear by
the scale and zero point computed from the tensor's range), and each integer convolution that
reads the bytes then copies them into words (qdirect.py, qpack.py): a second pass over them.
Where every reader of the quantized tensor is a convolution of the direct form, the
QuantizeLinear's step stores its bytes padded instead — four channels' bytes a word,
``q0 | q1 << 8 | q2 << 16 | q3 << 24``, sixteen pixels a store — and the convolutions only read
them; where every reader is a 1 × 1 convolution, it stores the groups of sixteen pixels' words
the 1 × 1 form's kernel reads (a group's words in a row). int8 mbv2_s, dynamically quantized:
its 64 → 16 1 × 1 convolution took 3.5 µs, a third of it copying.

The padded input is a workspace region of its own: codegen allots workspace step by step and
never shares it, so no other step writes it between the QuantizeLinear's and the
convolutions'. The readers share one stride, and each reads within the padding of the one
padded most (a 1 × 1 convolution beside a padded 3 × 3 one, as a ResNet block's skip branch,
reads from an offset into the other's padding). Their zero point (the border's value) is the
QuantizeLinear's, its bytes unwritten in between. The bytes are QuantizeLinear's exactly (the
same division, clamp, rounding half to even and zero point as qstore.py's vquant_store).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ops.conv import _geometry
from ...ops.quant import QUANT
from . import qdirect, quant
from .qstore import disjoint

# sixteen floats' QuantizeLinear values plus the zero point (and 128 for int8: the VNNI forms'
# unsigned bytes), as int32 lanes — after quant's helpers, which define NNOS_HAVE_VNNI
HELPER = r"""
#if defined(NNOS_HAVE_VNNI)
static inline __m512i nnos_q16(const float *x, __m512 s, __m512 lo, __m512 hi, __m512i z) {
    return _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_div_ps(_mm512_loadu_ps(x), s), lo),
                                                            hi)), z);
}
#endif
"""


@dataclass
class Feed:
    region: str                 # the padded input: a (uint8_t *) C expression into ws
    layout: tuple | None        # (stride, rows, a parity's words a row, top, left): the most padded reader's;
                                # None: 1 × 1 readers' blocks, [pixels / 16][words][16][4] (qpack._pointwise)
    words: int                  # four channels a word
    reads: dict[str, int]       # each convolution's output → the byte offset its kernel reads from

    @property
    def hp(self) -> int:
        return self.layout[1]

    @property
    def wq(self) -> int:
        return self.layout[2]


def _direct_layout(prog, node) -> tuple | str | None:
    """(stride, rows, words a row, top, left, kh, kw, oh, ow) of ConvInteger ``node``'s padded
    input when its VNNI form is the direct one; "blocks" when it is the 1 × 1 one (both
    quant.conv_integer's choice); else None."""
    if node.op != "ConvInteger" or int(node.attrs.get("group", 1)) != 1:
        return None
    xs, wsh = prog.type(node.inputs[0]).shape, prog.type(node.inputs[1]).shape
    if len(xs) != 4 or quant.centred_conv_weight(prog, node) is None:
        return None
    kernel, strides, dil, begin, _, out = _geometry(node, xs, wsh)
    geometry = (*xs, *kernel, strides, dil, begin, out)
    if (*kernel, *strides, *begin, *out) == (1, 1, 1, 1, 0, 0, xs[2], xs[3]):
        return "blocks"
    if not qdirect.applies(geometry, -(-xs[1] // 4), 16):
        return None
    return qdirect.layout(geometry) + (*kernel, *out)


def _same_zero(prog, q, conv, first: int, last: int) -> bool:
    """Whether ``conv`` reads the zero point QuantizeLinear ``q`` (step ``first``) used: the same
    constant, or the same bytes that no step before ``conv``'s (``last``) writes."""
    a = q.inputs[2] if len(q.inputs) > 2 else ""
    b = conv.inputs[2] if len(conv.inputs) > 2 else ""
    consts = prog.graph.consts
    if not a or not b or a in consts or b in consts:
        value = [int(consts[z].reshape(-1)[0]) if z in consts else (0 if not z else None) for z in (a, b)]
        return value[0] is not None and value[0] == value[1]
    if prog.ptr(a) != prog.ptr(b) or prog.type(b).size != 1:
        return False
    writes = [o for u in range(first + 1, last) for o in prog.graph.nodes[u].outputs if o]
    return disjoint(prog, a, writes)


def _reads(layouts: dict[str, tuple]) -> tuple[tuple, dict[str, int]] | None:
    """The padding of the reader padded most, and where each reader's kernel starts in it
    (bytes): a row offset, and a column one of whole words, or any for a 1-wide kernel (its
    parity plane then the offset's)."""
    most = max(layouts.values(), key=lambda lay: (lay[3], lay[4]))
    s, hp, wq, top, left = most[:5]
    reads = {}
    for name, (s2, _, _, top2, left2, kh, kw, oh, ow) in layouts.items():
        dy, dx = top - top2, left - left2
        if s2 != s or dy < 0 or dx < 0 or (kw > 1 and dx % s):
            return None
        if (oh - 1) * s + kh + dy > hp or ow - 1 + (kw - 1 + dx) // s >= wq:
            return None
        reads[name] = ((dx % s) * hp + dy) * wq * 4 + dx // s * 4
    return most[:5], reads


def choose(prog, skip: set) -> dict[str, Feed]:
    """The quantized tensors to store padded, by name: a QuantizeLinear's step's output of one
    image and whole words of channels that only direct-form convolutions read (its rows whole
    groups of sixteen), or only 1 × 1 ones (its pixels). None below 16-float vectors: no VNNI
    there, and the regions would be workspace no step uses (an arm64 board's)."""
    g, feeds = prog.graph, {}
    if prog.vw != 16:
        return feeds
    consumers = g.consumers()
    index = {id(n): k for k, n in enumerate(g.nodes)}
    for s, node in enumerate(g.nodes):
        if s in skip or node.op != "QuantizeLinear" or not quant.vector_quantizable(prog, node):
            continue
        y = node.outputs[0]
        shape = tuple(prog.type(y).shape)
        readers = consumers.get(y, [])
        if (len(shape) != 4 or shape[0] != 1 or shape[1] % 4 or shape[2] * shape[3] % 16 or y in g.outputs or not readers
                or any(r.inputs[0] != y or y in r.inputs[1:] for r in readers)):
            continue
        layouts = {r.outputs[0]: _direct_layout(prog, r) for r in readers}
        if any(lay is None for lay in layouts.values()):
            continue
        if not all(_same_zero(prog, node, r, s, index[id(r)]) for r in readers):
            continue
        words = shape[1] // 4
        if all(lay == "blocks" for lay in layouts.values()):
            region, _ = prog.ws(words * shape[2] * shape[3] * 4, "uint8_t")
            feeds[y] = Feed(region, None, words, {name: 0 for name in layouts})
            continue
        chosen = None if "blocks" in layouts.values() or shape[3] % 16 else _reads(layouts)
        if chosen is None:
            continue
        layout, reads = chosen
        region, _ = prog.ws(words * layout[0] * layout[1] * layout[2] * 4 + 128, "uint8_t")   # + a row's last load
        feeds[y] = Feed(region, layout, words, reads)
    return feeds


def _store(s: int, hp: int, wq: int, top: int, left: int) -> str:
    """C storing word vector v (pixels ix … ix + 15 of row iy, word t) in the padding."""
    if s == 1:
        return f"_mm512_storeu_si512((void *)(P + ((t * {hp} + iy + {top}) * {wq} + ix + {left}) * 4), v);"
    return qdirect.parity_store("v", hp, wq, top, left)


def quantize_linear(prog, node) -> str:
    """The QuantizeLinear step: padded words on VNNI for a chosen tensor (NCHW bytes elsewhere,
    where the convolutions pad them themselves), else quant's."""
    plain = quant.quantize_linear(prog, node)
    feed = prog.feeds.get(node.outputs[0])
    if feed is None:
        return plain
    quant.add_helpers(prog)
    if HELPER not in prog.helpers:
        prog.helpers.append(HELPER)
    x, y, scale = node.inputs[0], node.outputs[0], node.inputs[1]
    zero = node.inputs[2] if len(node.inputs) > 2 else ""
    dt = np.dtype(prog.type(y).dtype)
    lo, hi = QUANT[dt]
    _, c, h, wd = prog.type(y).shape
    z = f"(float){prog.ptr(zero)}[0]" if zero else "0.0f"
    plane = h * wd
    if feed.layout is None:                 # 1 × 1 readers: a group's sixteen pixels' words in a row
        border, ny, nx, at = "", 1, plane, "ix"
        store = f"_mm512_storeu_si512((void *)(P + (ix / 16 * {feed.words} + t) * 64), v);"
    else:
        s, hp, wq, top, left = feed.layout
        border = qdirect.fill_border("uint8_t", "off", feed.words * s, hp, wq, 4, (top, top + h),
                                     qdirect.interior(s, wq, left, wd))
        ny, nx, at, store = h, wd, f"iy * {wd} + ix", _store(s, hp, wq, top, left)
    q = [f"nnos_q16(x_ + {k * plane}, S_, L_, H_, Z_)" for k in range(4)]
    return f"""#if defined(NNOS_HAVE_VNNI)
{{ const float *x = {prog.ptr(x)}; uint8_t *P = {feed.region};
  const float s_ = {prog.ptr(scale)}[0], z_ = {z}, lo_ = {float(lo)!r}f - z_, hi_ = {float(hi)!r}f - z_;
  const int32_t off = (int32_t)z_ + {128 if dt == np.int8 else 0};
  const __m512 S_ = _mm512_set1_ps(s_), L_ = _mm512_set1_ps(lo_), H_ = _mm512_set1_ps(hi_);
  const __m512i Z_ = _mm512_set1_epi32(off);
{border}
  for (long t = 0; t < {feed.words}; t++) for (long iy = 0; iy < {ny}; iy++) for (long ix = 0; ix < {nx}; ix += 16) {{
    const float *x_ = x + t * {4 * plane} + {at};
    const __m512i v = _mm512_or_si512(_mm512_or_si512({q[0]}, _mm512_slli_epi32({q[1]}, 8)),
                                      _mm512_or_si512(_mm512_slli_epi32({q[2]}, 16), _mm512_slli_epi32({q[3]}, 24)));
    {store}
  }}
}}
#else
{plain}
#endif"""
