"""The direct form of an integer convolution at stride 1 or 2 (AVX-512 VNNI): no window copies.

The windowed form (qpack.py) copies every group of sixteen output pixels' windows into a block
before the kernel multiplies it: for int8 res5_s's 5×5 convolutions over 16 channels that is a
hundred 64-byte copies and the window rows' transposes a group, a fifth of the model's time.
Here the input is padded once a step into words by channel planes and column parity —
[words][s][hp][wq], four channels' bytes a word, column x of a padded row at parity x mod s,
index x / s; the border and the channels past the last the zero point (``off``) — so that word
j of tap (ky, kx) of sixteen consecutive output pixels of a row is the 64 bytes at (j, kx mod s,
oy·s + ky, ox + kx / s): the kernel (qkernels.py: ``nnos_qconv16_vnni_direct``) loads its
operand straight from the padded input. The padding is the pointwise form's interleave of four
channel rows (qpack.vnni_pointwise), sixteen pixels at a time (at stride 2 the even and the odd
pixels' words then stored apart), a row's last pixels one value at a time.
"""
from __future__ import annotations

from .ctype import storage
from .emit import indent


def applies(geometry, words: int, lanes: int) -> bool:
    """Stride 1 or 2 on both axes, no dilation, a pixel of two words or more (one word:
    qpack's _gather), output rows of a group at least, or of half a group: rows of eight, two
    a vector (the windowed form's copies took half of act_s's 32 × 8 × 8 convolutions)."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    return (strides[0] == strides[1] in (1, 2) and tuple(dil) == (1, 1) and words >= 2
            and (out[1] >= lanes or 2 * out[1] == lanes))


def _store(s: int, hp: int, wq: int, top: int, left: int) -> str:
    """C storing the interleaved words o0 … o3 of pixels ix … ix + 15 of row iy (word t) where
    they go in the padded input."""
    if s == 1:
        return (f"{{ uint8_t *d_ = P + ((t * {hp} + iy + {top}) * {wq} + ix + {left}) * 4; "
                "memcpy(d_, &o0, 16); memcpy(d_ + 16, &o1, 16); memcpy(d_ + 32, &o2, 16); memcpy(d_ + 48, &o3, 16); }")
    return ("{ const __m512i v_ = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512("
            "(__m128i)o0), (__m128i)o1, 1), (__m128i)o2, 2), (__m128i)o3, 3); "
            f"{parity_store('v_', hp, wq, top, left)} }}")


def parity_store(v: str, hp: int, wq: int, top: int, left: int) -> str:
    """C storing the sixteen words of __m512i ``v`` (pixels ix … ix + 15 of row iy, word t) at
    stride 2: the even pixels' eight words to one parity's row, the odd pixels' to the other's."""
    return ("{ const __m512i e_ = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, "
            f"11, 13, 15), {v}); const long x0 = ix + {left}; "
            f"_mm256_storeu_si256((__m256i *)(P + (((t * 2 + (x0 & 1)) * {hp} + iy + {top}) * {wq} + (x0 >> 1)) * 4), "
            "_mm512_castsi512_si256(e_)); "
            f"_mm256_storeu_si256((__m256i *)(P + (((t * 2 + 1 - (x0 & 1)) * {hp} + iy + {top}) * {wq} + ((x0 + 1) >> 1)) "
            "* 4), _mm512_extracti64x4_epi64(e_, 1)); }")


def _store_rows2(hp: int, wq: int, top: int, left: int) -> str:
    """_store at stride 1 for an input of rows of eight: o0, o1 are row iy's words, o2, o3 row
    iy + 1's (a value at a time, the padding took longer than the convolution: act_s's 32 × 8 × 8)."""
    return (f"{{ uint8_t *d_ = P + ((t * {hp} + iy + {top}) * {wq} + {left}) * 4; "
            f"memcpy(d_, &o0, 16); memcpy(d_ + 16, &o1, 16); memcpy(d_ + {wq * 4}, &o2, 16); "
            f"memcpy(d_ + {wq * 4 + 16}, &o3, 16); }}")


def fill_border(ctype: str, fill: str, planes: int, hp: int, wp: int, unit: int,
                rows: tuple[int, int], cols: list[tuple[int, int]]) -> str:
    """C setting what the input's rows do not overwrite in the padded buffer P to ``fill``: P is
    ``planes`` planes of ``hp`` rows × ``wp`` positions × ``unit`` elements (a whole number of
    4-byte words), the input's rows ``rows`` (first, end) and, in plane k, its positions
    ``cols[k % len(cols)]`` (first, end). A word at a time, with each side's loop bounds
    constants: a memset of the whole (act_s's 18 KB for each 16 × 32 × 32 input) stored most
    bytes twice."""
    per = 4 // {"uint8_t": 1, "int8_t": 1, "int16_t": 2}[ctype]
    rep = {1: "0x01010101u * (uint8_t)", 2: "0x00010001u * (uint16_t)"}[4 // per]
    n, plane = wp * unit // per, hp * wp * unit // per       # words: a row's, a plane's
    lines = ["{ typedef uint32_t w32_ __attribute__((may_alias)); w32_ *const W_ = (w32_ *)P;",
             f"  const uint32_t v_ = {rep}({fill});"]
    for k, (a, b) in enumerate(cols):
        a, b = a * unit // per, b * unit // per
        lines.append(f"  for (long k = {k}; k < {planes}; k += {len(cols)}) {{ w32_ *R = W_ + k * {plane};")
        lines.append(f"    for (long i = 0; i < {rows[0] * n}; i++) R[i] = v_;")
        lines.append(f"    for (long i = {rows[1] * n}; i < {plane}; i++) R[i] = v_;")
        lines.append(f"    for (long y = {rows[0]}; y < {rows[1]}; y++) {{")
        lines.append(f"      for (long i = 0; i < {a}; i++) R[y * {n} + i] = v_;")
        lines.append(f"      for (long i = {b}; i < {n}; i++) R[y * {n} + i] = v_; }} }}")
    return "\n".join(lines) + " }"


def interior(s: int, wq: int, left: int, wd: int) -> list[tuple[int, int]]:
    """Each column parity's (first, end) index of the input's columns in the padded rows."""
    return [(-(-(left - p) // s), min(wq, (left + wd - 1 - p) // s + 1)) for p in range(s)]


def layout(geometry) -> tuple[int, int, int, int, int]:
    """The padded input's (stride, rows, words a parity's row, top, left)."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    s = strides[0]
    hp = max(h + begin[0], (out[0] - 1) * s + kh)
    wq = -(-max(wd + begin[1], (out[1] - 1) * s + kw) // s)
    return s, hp, wq, begin[0], begin[1]


def direct(prog, node, geometry, words: int, f, call) -> str:
    """The step's C: each image padded into words, then ``call`` (the kernel over the padded
    input P; given y, hp, wq and s) — or only the call, over what the input's QuantizeLinear
    stored padded (qfeed.py)."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    x, o = node.inputs[0], node.outputs[0]
    mo = prog.type(o).shape[1]
    s, hp, wq, _, _ = layout(geometry)
    feed = prog.feeds.get(x)
    if feed is not None and o in feed.reads:
        return f"""const uint8_t *P = {feed.region} + {feed.reads[o]}; int32_t *Y = {prog.ptr(o)}; {f.decl}
{call("Y", feed.hp, feed.wq, s)}"""
    size = words * s * hp * wq * 4
    pad, _ = prog.ws(size + 128)                 # + a load's 64 bytes past: a row's last group reads on
    xt = storage(prog.type(x).dtype)
    whole = wd // 16 * 16
    each = (f"for (long iy = 0; iy < {h}; iy++) for (long ix = 0; ix < {whole}; ix += 16) {{ "
            f"const long px0 = iy * {wd} + ix;", "}")
    store = _store(s, hp, wq, begin[0], begin[1])
    if wd == 8 and s == 1 and h % 2 == 0:         # rows of eight: sixteen pixels are two rows
        whole = wd
        each = (f"for (long iy = 0; iy < {h}; iy += 2) {{ const long px0 = iy * 8;", "}")
        store = _store_rows2(hp, wq, begin[0], begin[1])
    rows = f.pointwise(xt, c, h * wd, store=store, each=each) if whole else ""
    tail = "" if whole == wd else f"""for (long iy = 0; iy < {h}; iy++) for (long ix = {whole}; ix < {wd}; ix++)
    for (long ic = 0; ic < {c}; ic++) {{
        const long x_ = ix + {begin[1]};
        P[(((ic / 4 * {s} + x_ % {s}) * {hp} + iy + {begin[0]}) * {wq} + x_ / {s}) * 4 + ic % 4] =
            {f.convert(f"xb[(ic * {h} + iy) * {wd} + ix]")};
    }}"""
    border = (f"memset(P, off, {size});" if whole < wd and c % 4     # the tail's channels past c
              else fill_border("uint8_t", "off", words * s, hp, wq, 4, (begin[0], begin[0] + h),
                               interior(s, wq, begin[1], wd)))
    return f"""const {xt} *X = {prog.ptr(x)}; int32_t *Y = {prog.ptr(o)}; uint8_t *P = {pad}; {f.decl}
for (long b = 0; b < {n}; b++) {{
    const {xt} *xb = X + b * {c * h * wd};
{indent(border, 4)}
{indent(rows, 4)}
{indent(tail, 4)}
    {call(f"Y + b * {mo * out[0] * out[1]}", hp, wq, s)}
}}"""
