"""The direct form of an integer convolution at stride 1 (AVX-512 VNNI): no window copies.

The windowed form (qpack.py) copies every group of sixteen output pixels' windows into a block
before the kernel multiplies it: for int8 res5_s's 5×5 convolutions over 16 channels that is a
hundred 64-byte copies and the window rows' transposes a group, a fifth of the model's time.
Here the input is padded once a step into words by channel planes — [words][hp][wp], four
channels' bytes a word, the border and the channels past the last the zero point (``off``) —
so that word j of tap (ky, kx) of sixteen consecutive output pixels of a row is the 64 bytes at
(j, oy + ky, ox + kx): the kernel (qkernels.py: ``nnos_qconv16_vnni_direct``) loads its operand
straight from the padded input. The padding is the pointwise form's interleave of four channel
rows (qpack.vnni_pointwise), sixteen pixels at a time, a row's last pixels one value at a time.
"""
from __future__ import annotations

from .ctype import storage
from .emit import indent


def applies(geometry, words: int, lanes: int) -> bool:
    """Stride 1, no dilation, a pixel of two words or more (one word: qpack's _gather), output
    rows of a group at least."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    return tuple(strides) == (1, 1) and tuple(dil) == (1, 1) and words >= 2 and out[1] >= lanes


def direct(prog, node, geometry, words: int, f, call) -> str:
    """The step's C: each image padded into words, then ``call`` (the kernel over the padded
    input P; its geometry's names: hp, wp as numbers in the call)."""
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    x, o = node.inputs[0], node.outputs[0]
    mo = prog.type(o).shape[1]
    hp = max(h + begin[0], out[0] + kh - 1)
    wp = max(wd + begin[1], out[1] + kw - 1)
    size = words * hp * wp * 4
    pad, _ = prog.ws(size + 128)                 # + a load's 64 bytes past: a row's last group reads on
    xt = storage(prog.type(x).dtype)
    whole = wd // 16 * 16
    store = (f"{{ uint8_t *d_ = P + ((t * {hp} + iy + {begin[0]}) * {wp} + ix + {begin[1]}) * 4; "
             "memcpy(d_, &o0, 16); memcpy(d_ + 16, &o1, 16); memcpy(d_ + 32, &o2, 16); memcpy(d_ + 48, &o3, 16); }")
    each = (f"for (long iy = 0; iy < {h}; iy++) for (long ix = 0; ix < {whole}; ix += 16) {{ "
            f"const long px0 = iy * {wd} + ix;", "}")
    rows = f.pointwise(xt, c, h * wd, store=store, each=each) if whole else ""
    tail = "" if whole == wd else f"""for (long iy = 0; iy < {h}; iy++) for (long ix = {whole}; ix < {wd}; ix++)
    for (long ic = 0; ic < {c}; ic++)
        P[((ic / 4 * {hp} + iy + {begin[0]}) * {wp} + ix + {begin[1]}) * 4 + ic % 4] =
            {f.convert(f"xb[(ic * {h} + iy) * {wd} + ix]")};"""
    return f"""const {xt} *X = {prog.ptr(x)}; int32_t *Y = {prog.ptr(o)}; uint8_t *P = {pad}; {f.decl}
for (long b = 0; b < {n}; b++) {{
    const {xt} *xb = X + b * {c * h * wd};
    memset(P, off, {size});
{indent(rows, 4)}
{indent(tail, 4)}
    {call(f"Y + b * {mo * out[0] * out[1]}", hp, wp)}
}}"""
