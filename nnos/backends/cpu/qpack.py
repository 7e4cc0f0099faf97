"""How an integer convolution's input reaches its kernel (qkernels.py): for each group of
``lanes`` output pixels, a block [K'/word][lanes][word] (for each word of the window's values,
each pixel's side by side), multiplied by every output channel's packed weights.

- ``windowed`` (any kernel, stride, padding, dilation): the image copied once into a bordered,
  channel-last buffer (``lanes`` pixels of a row at a time interleaved as below, each pixel's
  word then stored in its place), then each pixel's window a few contiguous runs of it — or,
  for a group of consecutive pixels of one output row, whole runs of ``lanes`` words: one
  vector load a word (a pixel of one word, ``_gather``), or each window row's pixels transposed
  once into a row per word (several, at stride 1: ``_transposed``).
- VNNI at stride 1 or 2 with two words a pixel or more and output rows of a group at least:
  no blocks — the kernel loads its operands from the input padded in words (qdirect.py; int8
  res5_s's 5×5 convolutions 23.6 → 14.3 µs).
- ``pointwise`` (1×1 at stride 1, no padding): straight from NCHW — channel rows of ``lanes``
  pixels loaded as whole vectors and interleaved in registers (two-source byte or half-word
  shuffles: vpermt2b/vpunpck on x86), without the channel-last copy and its scalar store per
  value (mbv2_s int8 322 → 254 µs, AVX-512).
Channels past the last (a part-filled word) hold the form's fill value. On VNNI a tile of
groups' blocks (16 KB) is built first and the kernel runs each four output channels over the
whole tile (``_groups``), so each output row is written along rather than one 16-pixel store to
every row, a plane apart, per group (VNNI and AVX2 alike).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import qdirect
from .ctype import storage
from .emit import indent


@dataclass(frozen=True)
class Form:
    """What the VNNI and AVX2 convolutions differ in."""
    ctype: str              # the buffers' element type
    per_word: int           # elements in the kernels' 4-byte word
    lanes: int              # output pixels per kernel call
    wdtype: type            # the packed weight's element type
    decl: str               # the C declaration of what ``convert`` and ``fill`` use
    fill: str               # the border's (and extra channels') value
    convert: Callable       # an input element's C expression → the buffer's value
    pointwise: Callable     # (input C type, channels, plane, store=, each=) → ``lanes`` pixels' words from NCHW
    rows: Callable          # (weights, y, ld = plane, words, out channels) → the kernel's call for a tile of groups
    direct: Callable | None = None   # (weights, y, hp, wq, s, words, kh, kw, oh, ow, out channels) → qdirect's call


def windowed(prog, node, wc: np.ndarray, geometry, f: Form) -> str:
    """The input copied once into a bordered, channel-last buffer, channels rounded up to whole
    words (the extra channels' weights are 0): a window is ``kh`` runs of ``kw × C'`` contiguous
    elements (``kh × kw`` runs of ``C'`` when dilated). ``lanes`` output pixels' windows are
    interleaved a word at a time ([K'/word][lanes][word]) and multiplied by every output
    channel's weights (K in (ky, kx, c) order) on the kernel, ``lanes`` pixels of a channel
    stored at once, in NCHW."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    x, o = node.inputs[0], node.outputs[0]
    mo, cw = wc.shape[0], -(-c // f.per_word) * f.per_word
    wk = np.zeros((-(-mo // 4) * 4, kh, kw, cw), f.wdtype)        # whole groups of four channels
    wk[:mo, ..., :c] = wc.transpose(0, 2, 3, 1)
    kq = kh * kw * cw // f.per_word
    hp = max(h + begin[0], (out[0] - 1) * strides[0] + (kh - 1) * dil[0] + 1)
    wp = max(wd + begin[1], (out[1] - 1) * strides[1] + (kw - 1) * dil[1] + 1)
    words = (kw if dil[1] == 1 else 1) * cw // f.per_word         # contiguous words per run
    runs = kh if dil[1] == 1 else kh * kw
    run_at = (f"u * {dil[0] * wp * cw}" if dil[1] == 1 else f"((u / {kw}) * {dil[0] * wp} + (u % {kw}) * {dil[1]}) * {cw}")
    npx, step = out[0] * out[1], f.lanes * f.per_word
    weights = prog.const(o + ":windowed", wk.reshape(wk.shape[0], -1), f.wdtype)
    size = kq * step
    # a tile of groups' blocks (16 KB; at least two groups up to 32 KB: the kernels take groups in
    # pairs), then one call for the tile
    block = kq * 4 * f.lanes                     # bytes: a group's block is kq words a pixel
    tile = max(1, min(-(-npx // f.lanes), max(16384, min(2 * block, 32768)) // block))
    call = f.rows(weights, f"Y + b * {mo * npx} + t0 * {f.lanes}", npx, kq, mo)
    pointwise = (kh, kw, *strides, *begin, *out) == (1, 1, 1, 1, 0, 0, h, wd)
    if not pointwise and f.direct is not None and qdirect.applies(geometry, cw // f.per_word, f.lanes):
        return qdirect.direct(prog, node, geometry, cw // f.per_word, f, lambda y, hp_, wq, s: f.direct(
            weights, y, hp_, wq, s, cw // f.per_word, kh, kw, out[0], out[1], mo))
    col, _ = prog.ws(tile * block, f.ctype)
    if pointwise:
        return _pointwise(prog, node, (n, c, npx), col, size, f, call, tile)
    pad, _ = prog.ws(hp * wp * cw * 4 // f.per_word + 64 + cw * 4, f.ctype)   # + a vector and a pixel: _gather's
                                                                              # and _transposed's may read past
    xt = storage(prog.type(x).dtype)
    fast = _gather(f, geometry, wp, cw, run_at) or _transposed(prog, f, geometry, wp, cw)
    whole = f"if (cnt == {f.lanes}) {{\n{indent(fast, 4)}\n}} else " if fast else ""
    scatter = _scatter(f, cw)
    border = (f"for (long i = 0; i < {hp * wp * cw}; i++) P[i] = ({f.ctype}){f.fill};"
              if wd % f.lanes and c < cw                                  # the tail's channels past c
              else qdirect.fill_border(f.ctype, f.fill, 1, hp, wp, cw, (begin[0], begin[0] + h),
                                       [(begin[1], begin[1] + wd)]))
    block = f"""{whole}for (long r = 0; r < cnt; r++) {{
    const long oy = (px0 + r) / {out[1]}, ox = (px0 + r) % {out[1]};
    const {f.ctype} *at = P + ((oy * {strides[0]}) * {wp} + ox * {strides[1]}) * {cw};
    for (long u = 0; u < {runs}; u++) {{
        const {f.ctype} *src = at + {run_at};
        {f.ctype} *dst = C + u * {words * step} + r * {f.per_word};
        for (long t = 0; t < {words}; t++) memcpy(dst + t * {step}, src + {f.per_word} * t, 4);
    }}
}}"""
    return f"""const {xt} *X = {prog.ptr(x)}; int32_t *Y = {prog.ptr(o)};
{f.ctype} *const CA = {col}; {f.ctype} *P = {pad}; {f.decl}
for (long i = 0; i < {size}; i++) CA[i] = ({f.ctype}){f.fill};
for (long b = 0; b < {n}; b++) {{
{indent(border, 4)}
    const {xt} *xb = X + b * {c * h * wd};
    for (long iy = 0; iy < {h}; iy++) {{
        long ix = 0;
        for (; ix + {f.lanes} <= {wd}; ix += {f.lanes}) {{
            const long px0 = iy * {wd} + ix; {f.ctype} *ps = P + ((iy + {begin[0]}) * {wp} + ix + {begin[1]}) * {cw};
{indent(f.pointwise(xt, c, h * wd, store=scatter), 12)}
        }}
        for (; ix < {wd}; ix++) {{
            {f.ctype} *ps = P + ((iy + {begin[0]}) * {wp} + ix + {begin[1]}) * {cw};
            for (long ic = 0; ic < {c}; ic++) ps[ic] = {f.convert(f"xb[(ic * {h} + iy) * {wd} + ix]")};
        }}
    }}
{indent(_groups(f.ctype, npx, f.lanes, size, tile, block, call), 4)}
}}"""


def _scatter(f: Form, cw: int) -> str:
    """Where the pointwise form's 16-byte results ``o0`` … go in the channel-last copy: each
    pixel's word to its place — or, with one word a pixel, the results stored whole (gcc had
    merged the pixels' copies into one 64-byte load of the results' array on the stack, which
    waited on the stores that filled it: int8 mbv2_s's first layer 3.05 → 2.21 µs)."""
    vectors = [f"o{i}" for i in range(f.lanes // 4)]             # four pixels' words each
    if cw == f.per_word:
        return " ".join(f"memcpy(ps + {4 * f.per_word * i}, &{v}, 16);" for i, v in enumerate(vectors))
    return (f"{{ const __typeof__(o0) o[] = {{{', '.join(vectors)}}}; for (int r_ = 0; r_ < {f.lanes}; r_++) "
            f"memcpy(ps + r_ * {cw} + t * {f.per_word}, (const char *)o + r_ * 4, 4); }}")


def _groups(ctype: str, npx: int, lanes: int, size: int, tile: int, block: str, call: str) -> str:
    """The loop over groups of ``lanes`` output pixels: ``block`` builds group px0's block at C
    (``cnt`` of its pixels real), ``call`` runs the kernel per tile of ``tile`` groups built side
    by side from CA (``tn`` groups, ``mk`` the last one's pixels)."""
    groups, last = -(-npx // lanes), npx - (-(-npx // lanes) - 1) * lanes
    return f"""for (long t0 = 0; t0 < {groups}; t0 += {tile}) {{
    const long tn = {groups} - t0 < {tile} ? {groups} - t0 : {tile};
    const long mk = t0 + tn == {groups} ? {last} : {lanes};
    for (long g = 0; g < tn; g++) {{
        const long px0 = (t0 + g) * {lanes}, cnt = {npx} - px0 < {lanes} ? {npx} - px0 : {lanes};
        {ctype} *C = CA + g * {size};
{indent(block, 8)}
    }}
    {call}
}}"""


def _gather(f: Form, geometry, wp: int, cw: int, run_at: str) -> str:
    """A whole group's block when its pixels are consecutive pixels of one output row with one
    word each (an image's few channels: cnn_s's first convolution) at stride 1 or 2: for each
    word of a run, its ``lanes`` pixels' words one vector load (stride 2: the even words of two
    vectors, a two-source shuffle) and one store — not ``lanes`` scalar 4-byte copies (400 a
    group). Empty when this does not apply."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    lanes, pw = f.lanes, f.per_word
    if cw != pw or dil[1] != 1 or strides[1] not in (1, 2) or out[1] % lanes:
        return ""
    if strides[1] == 1:
        load = "vw v; memcpy(&v, src, sizeof v);"
    else:
        even = ", ".join(str(2 * i) for i in range(lanes))
        load = (f"vw a, b; memcpy(&a, src, sizeof a); memcpy(&b, src + {lanes * pw}, sizeof b); "
                f"vw v = __builtin_shuffle(a, b, (vw){{{even}}});")
    return f"""typedef uint32_t vw __attribute__((vector_size({4 * lanes})));
const {f.ctype} *at = P + ((px0 / {out[1]}) * {strides[0]} * {wp} + (px0 % {out[1]}) * {strides[1]}) * {cw};
for (long u = 0; u < {kh}; u++)
    for (long t = 0; t < {kw}; t++) {{
        const {f.ctype} *src = at + {run_at} + t * {pw};
        {load}
        memcpy(C + (u * {kw} + t) * {lanes * pw}, &v, sizeof v);
    }}"""


def _transposed(prog, f: Form, geometry, wp: int, cw: int) -> str:
    """A whole group's block when its pixels are consecutive pixels of one output row with
    several words each — or whole output rows of them (an 8-pixel row, 16 lanes), a row at a
    time: for each window row, the pixels it covers transposed once into a row per word of a
    pixel and per pixel parity at stride 2 (T[par][j][p]: word j of pixel s·p + par), so that
    word j of tap kx for the row's pixels is the run T[kx mod s][j][kx / s …] — one copy of
    those words, not a copy of one a pixel (int8 res5_s's 16-channel 5×5: 320 of them a window
    row; act_s's 8×8 3×3 convolutions 3.52 → 2.66 µs at stride 1, 3.66 → 3.08 µs at 2). At
    stride 2 from four words a pixel (two: measured slower than the copies, AVX2's 3-channel
    first layers). Empty when this does not apply."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    lanes, words, s = f.lanes, cw // f.per_word, strides[1]      # a pixel's words (4 bytes each)
    # a group of whole output rows (8 pixels, 16 lanes) only with kw > 1: a 1×1's copies are as
    # many as the transpose's moves (measured slower)
    rows = out[1] % lanes and lanes % out[1] == 0 and kw > 1
    if words < (2 if s == 1 else 4) or dil[1] != 1 or s not in (1, 2) or (out[1] % lanes and not rows):
        return ""
    seg = min(lanes, out[1])                     # a group's pixels in one output row: all, or whole rows of them
    span = seg + (kw - 1) // s                   # a row of T (it may read s − 1 pixels past the window: P's slack)
    t, _ = prog.ws(s * words * span * 4, "uint32_t")
    step = lanes * f.per_word                    # a word's row in the block, in elements
    row = f"(px / {out[1]}) * {strides[0]} * {wp} + px % {out[1]} * {s}"
    return f"""uint32_t *const T = {t};
for (long px = px0; px < px0 + {lanes}; px += {seg}) {{
    const uint32_t *at = (const uint32_t *)(P + ({row}) * {cw});
    for (long u = 0; u < {kh}; u++) {{
        const uint32_t *src = at + u * {dil[0] * wp * words};
        for (long p = 0; p < {span}; p++) for (long q = 0; q < {s}; q++) for (long j = 0; j < {words}; j++)
            T[(q * {words} + j) * {span} + p] = src[(p * {s} + q) * {words} + j];
        for (long kx = 0; kx < {kw}; kx++) for (long j = 0; j < {words}; j++)
            memcpy(C + ((u * {kw} + kx) * {words} + j) * {step} + (px - px0) * {f.per_word},
                   T + ((kx % {s}) * {words} + j) * {span} + kx / {s}, {4 * seg});
    }}
}}"""


def _pointwise(prog, node, dims: tuple, col: str, size: int, f: Form, call: str, tile: int) -> str:
    """A 1×1 convolution at stride 1: a tile's whole groups built straight from NCHW (qpack.py)
    word by word — each word's channel rows read along the whole tile, not a group's 16 bytes of
    every row in turn (int8 mbv2_s's 64 → 16 convolution, 64 rows a plane apart: 3.75 → 3.3 µs)
    — then a last part-filled group one value at a time (its channels past the last whole word
    the fill). Or only the kernel's calls, when the input's QuantizeLinear stored the groups
    (qfeed.py)."""
    x, o = node.inputs[0], node.outputs[0]
    n, c, npx = dims
    xt = storage(prog.type(x).dtype)
    pw, lanes, cw = f.per_word, f.lanes, -(-c // f.per_word) * f.per_word
    groups, last = -(-npx // lanes), npx - (-(-npx // lanes) - 1) * lanes
    feed = prog.feeds.get(x)
    if feed is not None and feed.layout is None and pw == 4:      # VNNI: the QuantizeLinear built the groups
        return f"""int32_t *Y = {prog.ptr(o)}; {f.decl}
for (long b = 0; b < 1; b++) for (long t0 = 0; t0 < {groups}; t0 += {tile}) {{
    const long tn = {groups} - t0 < {tile} ? {groups} - t0 : {tile}, mk = {lanes};
    const uint8_t *const CA = {feed.region} + t0 * {size};
    {call}
}}"""
    each = (f"for (long g = 0; g < gw; g++) {{ const long px0 = (t0 + g) * {lanes}; "
            f"{f.ctype} *const C = CA + g * {size};", "}")
    return f"""const {xt} *X = {prog.ptr(x)}; int32_t *Y = {prog.ptr(o)};
{f.ctype} *const CA = {col}; {f.decl}
for (long b = 0; b < {n}; b++) {{
    const {xt} *xb = X + b * {c * npx};
    for (long t0 = 0; t0 < {groups}; t0 += {tile}) {{
        const long tn = {groups} - t0 < {tile} ? {groups} - t0 : {tile};
        const long mk = t0 + tn == {groups} ? {last} : {lanes};
        const long gw = mk == {lanes} ? tn : tn - 1;             /* whole groups */
        {{
{indent(f.pointwise(xt, c, npx, each=each), 12)}
        }}
        if (gw < tn) {{
            const long px0 = (t0 + gw) * {lanes}; {f.ctype} *const C = CA + gw * {size};
            for (long r = 0; r < mk; r++) for (long ic = 0; ic < {cw}; ic++)
                C[ic / {pw} * {lanes * pw} + r * {pw} + ic % {pw}] =
                    ic < {c} ? {f.convert(f"xb[ic * {npx} + px0 + r]")} : ({f.ctype}){f.fill};
        }}
        {call}
    }}
}}"""


_LO8 = ", ".join(f"{i}, {i + 16}" for i in range(8))
_HI8 = ", ".join(f"{i}, {i + 16}" for i in range(8, 16))
_LO16 = ", ".join(f"{2 * i}, {2 * i + 1}, {2 * i + 16}, {2 * i + 17}" for i in range(4))
_HI16 = ", ".join(f"{2 * i}, {2 * i + 1}, {2 * i + 16}, {2 * i + 17}" for i in range(4, 8))


def _rows(c: int, word: int, load, fill: str, each: tuple[str, str] = ("", "")) -> list[str]:
    """C statements that load channel rows t·word … t·word+word−1 into r0, r1, …: for every
    whole word in a loop over t, then the last part-filled word (its missing rows the fill);
    ``each`` opens and closes a loop inside each word's (over the groups of a tile)."""
    loads = [f"r{j} = {load(f't * {word} + {j}')};" for j in range(word)]
    head, tail = each
    lines = [f"for (long t = 0; t < {c // word}; t++) {{ {head}", "    " + " ".join(loads), "    INTERLEAVE",
             f"{tail}}}"]
    if c % word:
        last = [f"r{j} = {load(f'{c // word * word + j}')};" if j < c % word else f"r{j} = {fill};"
                for j in range(word)]
        lines += [f"{{ {head}", f"    const long t = {c // word}; " + " ".join(last), "    INTERLEAVE", f"{tail}}}"]
    return lines


def vnni_pointwise(xtype: str, flip: bool, c: int, npx: int,
                   store: str = "memcpy(C + t * 64, &o0, 16); memcpy(C + t * 64 + 16, &o1, 16); "
                                "memcpy(C + t * 64 + 32, &o2, 16); memcpy(C + t * 64 + 48, &o3, 16);",
                   each: tuple[str, str] = ("", "")) -> str:
    """Sixteen pixels × four channels a word: four rows of 16 bytes (from ``xb + channel · npx +
    px0``) to 64 interleaved bytes ``o0`` … ``o3``, which ``store`` puts where they go (word
    ``t``; for each group when ``each`` loops over them inside each word's). Four 16-byte
    stores: not an array copied as one 64-byte load, which waited on the four stores that filled
    it (a failed store forwarding each word: int8 mbv2_s's 64 → 16 convolution 7.0 µs, 4 of it
    building its blocks)."""
    conv = " ^ (vb16){0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}" \
        if flip else ""

    def load(ch: str) -> str:
        return f"({{ vb16 v_; memcpy(&v_, (const {xtype} *)xb + ({ch}) * {npx} + px0, 16); v_{conv}; }})"
    fill = "(vb16){" + ", ".join(["(uint8_t)off"] * 16) + "}"
    mix = ("{ vb16 a = __builtin_shuffle(r0, r1, lo8), b = __builtin_shuffle(r0, r1, hi8), "
           "e = __builtin_shuffle(r2, r3, lo8), f = __builtin_shuffle(r2, r3, hi8); "
           "vb16 o0 = __builtin_shuffle(a, e, lo16), o1 = __builtin_shuffle(a, e, hi16), "
           f"o2 = __builtin_shuffle(b, f, lo16), o3 = __builtin_shuffle(b, f, hi16); {store} }}")
    head = ["typedef uint8_t vb16 __attribute__((vector_size(16)));",
            f"const vb16 lo8 = {{{_LO8}}}, hi8 = {{{_HI8}}}, lo16 = {{{_LO16}}}, hi16 = {{{_HI16}}};",
            "vb16 r0, r1, r2, r3;"]
    return "\n".join(head + _rows(c, 4, load, fill, each)).replace("INTERLEAVE", mix)


def avx2_pointwise(xtype: str, c: int, npx: int,
                   store: str = "memcpy(C + t * 16, &o0, 16); memcpy(C + t * 16 + 8, &o1, 16);",
                   each: tuple[str, str] = ("", "")) -> str:
    """Eight pixels × two channels a word: two rows of 8 centred int16 values to 16 interleaved
    ``o0``, ``o1``, which ``store`` puts where they go (word ``t``; ``each`` as vnni_pointwise's)."""
    src = "vs8" if xtype == "int8_t" else "vu8"

    def load(ch: str) -> str:
        return (f"({{ {src} v_; memcpy(&v_, xb + ({ch}) * {npx} + px0, 8); "
                f"__builtin_convertvector(v_, vh8) - (int16_t)zx; }})")
    mix = ("{ vh8 o0 = __builtin_shuffle(r0, r1, (vh8){0, 8, 1, 9, 2, 10, 3, 11}), "
           f"o1 = __builtin_shuffle(r0, r1, (vh8){{4, 12, 5, 13, 6, 14, 7, 15}}); {store} }}")
    head = ["typedef int16_t vh8 __attribute__((vector_size(16)));",
            "typedef uint8_t vu8 __attribute__((vector_size(8))); typedef int8_t vs8 __attribute__((vector_size(8)));",
            "vh8 r0, r1;"]
    return "\n".join(head + _rows(c, 2, load, "(vh8){0, 0, 0, 0, 0, 0, 0, 0}", each)).replace("INTERLEAVE", mix)
