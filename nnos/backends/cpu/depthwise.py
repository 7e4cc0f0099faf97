"""Depthwise convolutions (group = input channels = output channels: MobileNet's 3×3 and 5×5
at stride 1 or 2).

The channels are the vector lanes: the input is copied into a zero-bordered, channel-blocked
workspace ([C/VW][HP][WP][VW]; from NCHW a transpose on the way, from a blocked producer a
copy), so each tap of each output pixel is one vector load times one weight vector, at any
stride, with no bounds checks. A register block of output pixels along the row shares each
weight load. The output is stored whole vectors when it stays blocked (codegen.choose_layouts),
else channel by channel; channels past the last whole vector are zero lanes, never stored.

From NCHW to NCHW (a QDQ model's depthwise convolution, between a DequantizeLinear and a
QuantizeLinear, or one after any op that is not a convolution) the pixels of a row are the
lanes instead (``_along_rows``): each channel's plane is copied row by row into a zero-bordered
plane, each tap is one load (at stride 2: the even lanes of two) times the tap's weight splat,
and rows are stored as they are — no transposes on the way in or out. The sums are the
channel-lane form's, in the same order. When only a later step's QuantizeLinear reads the
output, the rows are stored as its bytes (qstore.py).
"""
from __future__ import annotations

import numpy as np

from .emit import after_split, indent, row_blocks, store_transposed
from .elementwise import apply, epilogue_pass, unary_chain


def is_depthwise(prog, node, geometry) -> bool:
    xs, ws_ = geometry[0], geometry[1]
    groups = int(node.attrs.get("group", 1))
    return groups > 1 and groups == xs[1] == ws_[0] and ws_[1] == 1


def _copy_in(xb: bool, c: int, h: int, wd: int, hp: int, wp: int, top: int, left: int, vw: int,
             split: bool) -> list[str]:
    """The input into the blocked, bordered workspace XP (on a team: each thread its share of
    the channels, then a barrier)."""
    rows = c // vw if xb else -(-c // vw)
    share = f"NNOS_SHARE(plo, phi, {rows});" if split else f"const int plo = 0, phi = {rows};"
    return ["{ " + share] + _copy_rows(xb, c, h, wd, hp, wp, top, left, vw) + ["}"] + (["NNOS_SYNC();"] if split else [])


def _copy_rows(xb: bool, c: int, h: int, wd: int, hp: int, wp: int, top: int, left: int, vw: int) -> list[str]:
    if xb:
        return [f"for (int cb = plo; cb < phi; cb++) for (int r = 0; r < {h}; r++)",
                f"    memcpy(XP + ((cb * {hp} + r + {top}) * {wp} + {left}) * {vw}, xn + (cb * {h} + r) * {wd * vw}, "
                f"{wd * vw * 4});"]
    return [f"for (int cb = plo; cb < phi; cb++) for (int r = 0; r < {h}; r++) {{",
            f"    float *d = XP + ((cb * {hp} + r + {top}) * {wp} + {left}) * {vw}; "
            f"const float *s = xn + (cb * {vw * h} + r) * {wd};"] + _transpose_in(c, h, wd, vw) + ["}"]


def _transpose_in(c: int, h: int, wd: int, vw: int) -> list[str]:
    """Row r of channel block cb from NCHW (channel j's row at s + j·H·W) to pixel-major d: VW
    pixels of the block's VW channels at a time transposed in registers; the last pixels of a
    row and a block short of channels one value at a time."""
    whole, plane = wd // vw * vw, h * wd
    scalar = (f"for (int q = {{lo}}; q < {wd}; q++) for (int j = 0; j < {{nj}}; j++) "
              f"d[q * {vw} + j] = s[j * {plane} + q];")
    lines = []
    if c % vw:
        lines.append(f"    if (cb == {c // vw}) {{ {scalar.format(lo=0, nj=c % vw)} continue; }}")
    if whole:
        lines += [f"    for (int q0 = 0; q0 < {whole}; q0 += {vw}) {{",
                  f"        vf t[{vw}] = {{{', '.join(f'vload(s + {j * plane} + q0)' for j in range(vw))}}}; vtranspose(t);",
                  "        " + " ".join(f"vstore(d + (q0 + {i}) * {vw}, t[{i}]);" for i in range(vw)), "    }"]
    if wd % vw:
        lines.append("    " + scalar.format(lo=whole, nj=vw))
    return lines


def _block(p: int, geo: tuple, chain, yb: bool, c: int) -> list[str]:
    """``p`` output pixels from ox0 of row oy, channel block cb."""
    kh, kw, hp, wp, sh, sw, dh, dw, oh, ow, vw = geo
    lines = [" ".join(f"vf a{i} = bias;" for i in range(p)),
             f"for (int ky = 0; ky < {kh}; ky++) {{",
             f"    const float *xr = XP + ((cb * {hp} + oy * {sh} + ky * {dh}) * {wp} + ox0 * {sw}) * {vw};",
             f"    const float *wr = Wd + (cb * {kh} + ky) * {kw * vw};",
             f"    for (int kx = 0; kx < {kw}; kx++) {{",
             f"        vf w = vload(wr + kx * {vw}); const float *xk = xr + kx * {dw * vw};",
             "        " + " ".join(f"a{i} += vload(xk + {i * sw * vw}) * w;" for i in range(p)),
             "    }", "}"]
    if yb:
        lines += [f"vstore(yn + ((cb * {oh} + oy) * {ow} + ox0 + {i}) * {vw}, {apply(chain, f'a{i}', True)});"
                  for i in range(p)]
        return lines
    lines.append(f"{{ float *yr = yn + cb * {vw * oh * ow} + oy * {ow} + ox0;")
    lines += store_transposed([apply(chain, f"a{i}", True) for i in range(p)], vw, lambda j: f"yr + {j} * {oh * ow}",
                              None if c % vw == 0 else f"{c} - cb * {vw}")
    lines.append("}")
    return lines


def depthwise(prog, node, geometry) -> str:
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    xs, _, kernel, strides, dil, begin, end, out = geometry
    nb, c, h, wd = xs
    kh, kw = kernel
    oh, ow = out
    vw = prog.vw
    if x not in prog.blocked and y not in prog.blocked and tuple(strides) in ((1, 1), (2, 2)) and ow >= vw:
        return _along_rows(prog, node, geometry)
    cb_n = -(-c // vw)
    wt = np.zeros((cb_n * vw, kh, kw), np.float32)
    wt[:c] = prog.graph.consts[w].astype(np.float32).reshape(c, kh, kw)
    packed = wt.reshape(cb_n, vw, kh, kw).transpose(0, 2, 3, 1)               # [cb][kh][kw][lane]
    bias = np.zeros(cb_n * vw, np.float32)
    if len(node.inputs) > 2 and node.inputs[2]:
        bias[:c] = prog.graph.consts[node.inputs[2]].reshape(c)
    bname = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else w + "@nobias"
    hp, wp = h + begin[0] + end[0], wd + begin[1] + end[1]
    xb, yb = x in prog.blocked, y in prog.blocked
    xp, _ = prog.ws(cb_n * vw * hp * wp * 4)                  # its border stays zero: only the inside is written
    chain = unary_chain(prog, node)
    lines = [f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)}; float *XP = {xp};",
             f"const float *Wd = {prog.const(w + f'@dw{vw}', packed)}; "
             f"const float *Bd = {prog.const(bname + f'@dwbias{vw}', bias)};",
             f"for (int n = 0; n < {nb}; n++) {{",
             f"    const float *xn = X + n * {c * h * wd}; float *yn = Y + n * {c * oh * ow};"]
    by_blocks = cb_n >= 4                                     # on a team: channel blocks, or rows when few
    split = prog.share(nb * c * oh * ow * kh * kw, cb_n if by_blocks else oh)
    lines += ["    " + line for line in _copy_in(xb, c, h, wd, hp, wp, begin[0], begin[1], vw, bool(split))]
    cb_range, oy_range = ((0, cb_n), (0, oh)) if not split else (("lo", "hi"), (0, oh)) if by_blocks else \
        ((0, cb_n), ("lo", "hi"))
    if split:
        lines.append(f"    {split}")
    pmax = 8 if vw == 16 else 6                               # accumulators + the weight + a load
    geo = (kh, kw, hp, wp, strides[0], strides[1], dil[0], dil[1], oh, ow, vw)
    lines.append(f"    for (int cb = {cb_range[0]}; cb < {cb_range[1]}; cb++) {{ vf bias = vload(Bd + cb * {vw});")
    lines.append(f"        for (int oy = {oy_range[0]}; oy < {oy_range[1]}; oy++) {{")
    lines += ["            " + line for line in row_blocks(ow, pmax, lambda n: _block(n, geo, chain, yb, c), even=False)]
    lines += ["        }", "    }"]
    if split and nb > 1:
        lines.append("    NNOS_SYNC();")                 # every thread done with XP before the next image's copy
    lines.append("}")
    return indent("\n".join(lines)) + "\n" + after_split(prog, epilogue_pass(prog, node, y, in_registers=True))


def _along_rows(prog, node, geometry) -> str:
    """NCHW in and out, stride 1 or 2, rows of at least a vector: vectors of a row's pixels (module
    docstring), in tiles of up to 4 rows × 2 vectors whose sums are independent (one sum's taps
    are a chain of dependent multiply-adds). A row's last vector may reach past the row (into the
    border, the next row, or the plane's slack): those lanes are computed and not stored."""
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    xs, _, (kh, kw), strides, dil, begin, end, (oh, ow) = geometry
    stride = strides[0]
    nb, c, h, wd = xs
    vw = prog.vw
    hp, wp = h + begin[0] + end[0], wd + begin[1] + end[1]
    taps = prog.graph.consts[w].astype(np.float32).reshape(c, kh * kw)
    bias = np.zeros(c, np.float32)
    if len(node.inputs) > 2 and node.inputs[2]:
        bias[:] = prog.graph.consts[node.inputs[2]].reshape(c)
    bname = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else w + "@nobias"
    xp, _ = prog.ws((c * hp * wp + 2 * vw) * 4)               # its border stays zero: only the inside is written
    split = prog.share(nb * c * oh * ow * kh * kw, c)
    offsets = [ky * dil[0] * wp + kx * dil[1] for ky in range(kh) for kx in range(kw)]
    if stride == 2 and evens(vw) not in prog.helpers:
        prog.helpers.append(evens(vw))
    chain = unary_chain(prog, node)
    # quantized in registers where a tile has sums enough to hide the division (stride 2: twice
    # the loads; two vectors a row): one vector a row at stride 1 measured slower than the
    # QuantizeLinear's own pass (int8 mbv2_s: 10.7 against 7.2 + 2.8 µs); a residual epilogue
    # needs the float32 sums stored
    fits = stride == 2 or ow >= 2 * vw
    q = prog.quantized_store(y) if chain is not None and fits else None
    yt = "uint8_t" if q else "float"                        # int8's bytes too: the value is stored as its bit pattern
    out = f"{yt} *Y = {f'(uint8_t *){prog.ptr(q.out)}' if q else prog.tensor(y)};"
    tile = RowTile(offsets, wp, ow, vw, stride, chain, q)
    lines = [f"const float *X = {prog.tensor(x)}; {out} float *XP = {xp};",
             f"const float *Wd = {prog.const(w + '@dwrows', taps)}; const float *Bd = {prog.const(bname + '@dwrowsbias', bias)};",
             split or f"const int lo = 0, hi = {c};",
             f"for (int n = 0; n < {nb}; n++) for (int ch = lo; ch < hi; ch++) {{",
             f"    const float *xc = X + (n * {c} + ch) * {h * wd}; {yt} *yc = Y + (n * {c} + ch) * {oh * ow};",
             f"    float *pc = XP + ch * {hp * wp}; const vf b = vsplat(Bd[ch]);",
             f"    for (int r = 0; r < {h}; r++) {{ float *d = pc + (r + {begin[0]}) * {wp} + {begin[1]}; "
             f"const float *s = xc + r * {wd}; {_row_copy(wd, vw)} }}",
             "    " + " ".join(f"const vf k{t} = vsplat(Wd[ch * {kh * kw} + {t}]);" for t in range(kh * kw))]
    lines += ["    " + line for line in blocks("oy0", oh, min(4, oh), lambda rows: tile.row(rows))]
    lines.append("}")
    return indent("\n".join(lines)) + "\n" + after_split(prog, epilogue_pass(prog, node, y, in_registers=True))


def _row_copy(n: int, vw: int) -> str:
    """C copying ``n`` floats from s to d a vector at a time (gcc expands a memcpy of a row
    into 16-byte moves: a quarter of an AVX2 step's time), the rest by memcpy."""
    whole = n // vw * vw
    code = f"for (int k = 0; k < {whole}; k += {vw}) vstore(d + k, vload(s + k));" if whole else ""
    return code + (f" memcpy(d + {whole}, s + {whole}, {(n - whole) * 4});" if n % vw else "")


def blocks(var: str, total: int, size: int, body) -> list[str]:
    """``var`` from 0 to ``total`` in blocks of ``size``, then one block of what is left:
    ``body(n)`` is the C (a list of lines) for a block of n."""
    lines, whole = [], total // size * size
    if whole:
        lines += [f"for (int {var} = 0; {var} < {whole}; {var} += {size}) {{"] + ["    " + x for x in body(size)] + ["}"]
    if total % size:
        lines += [f"{{ const int {var} = {whole};"] + ["    " + x for x in body(total % size)] + ["}"]
    return lines


def evens(vw: int) -> str:
    """A stride-2 tap: the even lanes of the 2·VW values from p (gcc: vpermt2ps, uzp1, shufps)."""
    mask = ", ".join(str(2 * i) for i in range(vw))
    return (f"static inline vf nnos_evens(const float *p) {{ return __builtin_shuffle(vload(p), vload(p + {vw}), "
            f"(vi){{{mask}}}); }}\n")


class RowTile:
    """The C of a tile: ``rows`` output rows from oy0 × ``vecs`` vectors from ox0 (the names it
    expects: pc the plane, yc the output, b the sums' start, k0… the taps' splats)."""

    def __init__(self, offsets: list[int], wp: int, ow: int, vw: int, stride: int, chain, quantized=None,
                 integer: bool = False, finish=None):
        self.offsets, self.wp, self.ow, self.vw, self.stride, self.chain = offsets, wp, ow, vw, stride, chain
        self.quantized = quantized                   # a qstore.QStore: the rows stored as its bytes
        self.integer = integer                       # sums of integers (qdepthwise.py's ConvInteger): int32
        self.finish = finish                         # a sum's C expression → the value stored (else the chain's)
        self.load = "vload" if stride == 1 else "nnos_evens"

    def row(self, rows: int) -> list[str]:
        """Rows oy0 … oy0 + rows − 1, along their width: pairs of vectors, one, a part-filled one."""
        nvec, tail = self.ow // self.vw, self.ow % self.vw
        lines = blocks("ox0", nvec * self.vw, max(1, min(2, nvec)) * self.vw,      # none in a row narrower than a vector
                        lambda width: self.tile(rows, width // self.vw, self.vw))
        if tail:
            lines += [f"{{ const int ox0 = {nvec * self.vw};"] + ["    " + x for x in self.tile(rows, 1, tail)] + ["}"]
        return lines

    def tile(self, rows: int, vecs: int, stored: int) -> list[str]:
        sums = [(r, v, f"a{r}_{v}") for r in range(rows) for v in range(vecs)]
        s = self.stride
        lines = [f"const float *xr = pc + oy0 * {s * self.wp} + ox0 * {s};", " ".join(f"vf {a} = b;" for *_, a in sums)]
        lines += [" ".join(f"{a} += {self.load}(xr + {(r * self.wp + v * self.vw) * s + off}) * k{t};" for r, v, a in sums)
                  for t, off in enumerate(self.offsets)]
        for r, v, a in sums:
            at = f"yc + (oy0 + {r}) * {self.ow} + ox0 + {v * self.vw}"
            value = self.finish(a) if self.finish else apply(self.chain, a, True)
            if self.quantized:
                lines.append(self.quantized.store(at, value, stored))
            elif self.integer:
                lines.append(f"{{ const vi t = __builtin_convertvector({a}, vi); memcpy({at}, &t, {stored * 4}); }}")
            elif stored == self.vw:
                lines.append(f"vstore({at}, {value});")
            else:
                lines.append(f"{{ const vf t = {value}; memcpy({at}, &t, {stored * 4}); }}")
        return lines
