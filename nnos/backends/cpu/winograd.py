"""3×3 convolutions at stride 1 by Winograd's F(2×2, 3×3): 16 multiply-adds per input and
output channel for each 2×2 block of outputs, where the direct form takes 36.

    V = Bᵀ d B      each 4×4 input tile d, a vector of VW channels per value
    M = Σ_c U ⊙ V   16 products of [tiles × C] by [C × C_out]; U = G g Gᵀ, the weights
                    transformed once, here
    Y = Aᵀ M A      the tile's 2×2 outputs, then the bias and the chain in registers

A row of tiles at a time, its V and M small enough for the first-level cache: the image is
copied once into a zero-bordered, channel-blocked workspace (an NCHW input transposed VW
channels by VW pixels in registers), each tile row transformed, multiplied (each V value
broadcast against a vector of output channels, a register block of tiles per weight load)
and transformed back; an NCHW output is stored a transposed row of VW pixels at a time. The
values differ from the direct sum in the last bits (the transforms add and subtract before
the products). On a team, each thread its own tile rows.
"""
from __future__ import annotations

import numpy as np

from .emit import after_split, indent, row_blocks
from .elementwise import apply, epilogue_pass, unary_chain
from .team import MAX_THREADS

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def winograd_ok(prog, node, geometry) -> bool:
    """3×3, stride 1, undilated, one group, whole vectors of input and output channels, and an
    output the 2×2 tiles cover with at most half as much again (an odd size: a last tile row or
    column half outside, computed and not stored)."""
    xs, ws_, kernel, strides, dil, begin, end, out = geometry
    vw = prog.vw
    covered = 4 * -(-out[0] // 2) * -(-out[1] // 2)
    return (int(node.attrs.get("group", 1)) == 1 and tuple(kernel) == (3, 3) and tuple(strides) == (1, 1)
            and tuple(dil) == (1, 1) and out[1] >= 4 and 2 * covered <= 3 * out[0] * out[1]
            and xs[1] % vw == 0 and ws_[0] % vw == 0)


def _weights(prog, node, vw: int) -> str:
    """U[pos][out block][c][lane] = (G g Gᵀ)[pos] of output channel block·VW + lane, input c."""
    w = prog.graph.consts[node.inputs[1]].astype(np.float64)              # [C_out][C][3][3]
    u = np.einsum("ai,ocij,bj->abco", G, w, G)                            # [4][4][C][C_out]
    oc, c = w.shape[:2]
    u = u.reshape(16, c, oc // vw, vw).transpose(0, 2, 1, 3)              # [pos][ob][c][lane]
    return prog.const(node.inputs[1] + f"@winograd{vw}", np.ascontiguousarray(u.astype(np.float32)))


def _copy_in(nchw: bool, c: int, h: int, wd: int, hp: int, wp: int, begin, vw: int, rows: str) -> list[str]:
    """The image into XB [C/VW][HP][WP][VW] (its border stays 0): rows ``rows`` of each block."""
    if not nchw:
        return [f"for (int cb = 0; cb < {c // vw}; cb++) for (int r = {rows}; r++)",
                f"    memcpy(XB + ((cb * {hp} + r + {begin[0]}) * {wp} + {begin[1]}) * {vw}, "
                f"xn + (cb * {h} + r) * {wd * vw}, {wd * vw * 4});"]
    return [f"for (int cb = 0; cb < {c // vw}; cb++) for (int r = {rows}; r++) {{",
            f"    float *dst = XB + ((cb * {hp} + r + {begin[0]}) * {wp} + {begin[1]}) * {vw};",
            f"    const float *src = xn + (cb * {vw * h} + r) * {wd}; int col = 0;",
            f"    for (; col + {vw} <= {wd}; col += {vw}) {{",
            f"        vf t[{vw}]; for (int j = 0; j < {vw}; j++) t[j] = vload(src + j * {h * wd} + col);",
            f"        vtranspose(t); for (int k = 0; k < {vw}; k++) vstore(dst + (col + k) * {vw}, t[k]);",
            "    }",
            f"    for (; col < {wd}; col++) for (int j = 0; j < {vw}; j++) dst[col * {vw} + j] = src[j * {h * wd} + col];",
            "}"]


def _input_transform(nblocks: int, hp: int, wp: int, tw: int, vw: int) -> list[str]:
    """Bᵀ d B of tile (ty, tx) of block cb: 16 loads, 32 adds, 16 stores into Vs[pos][cb][tx]."""
    d = [[f"d{i}{j}" for j in range(4)] for i in range(4)]
    t = [[f"t{i}{j}" for j in range(4)] for i in range(4)]
    lines = [f"const float *x = XB + ((cb * {hp} + 2 * ty) * {wp} + 2 * tx) * {vw};",
             " ".join(f"vf {d[i][j]} = vload(x + {(i * wp + j) * vw});" for i in range(4) for j in range(4))]
    for j in range(4):
        lines.append(f"vf {t[0][j]} = {d[0][j]} - {d[2][j]}, {t[1][j]} = {d[1][j]} + {d[2][j]}, "
                     f"{t[2][j]} = {d[2][j]} - {d[1][j]}, {t[3][j]} = {d[1][j]} - {d[3][j]};")
    for i in range(4):
        v = [f"{t[i][0]} - {t[i][2]}", f"{t[i][1]} + {t[i][2]}", f"{t[i][2]} - {t[i][1]}", f"{t[i][1]} - {t[i][3]}"]
        lines.append(" ".join(f"vstore(Vs + (({4 * i + j} * {nblocks} + cb) * {tw} + tx) * {vw}, {v[j]});"
                              for j in range(4)))
    return lines


def _products(c: int, ob: int, nbk: int, tw: int, vw: int) -> list[str]:
    """M[pos][ob][tx] = Σ_c V[pos][c][tx] · U[pos][ob][c], a register block of tiles at a time."""
    cb = c // vw

    def block(p: int) -> list[str]:
        acc = [[f"a{b}_{i}" for i in range(p)] for b in range(nbk)]
        lines = [" ".join(f"vf {a} = vsplat(0.0f);" for row in acc for a in row),
                 f"for (int ci = 0; ci < {c}; ci++) {{",
                 "    " + " ".join(f"vf w{b} = vload(u{b} + ci * {vw});" for b in range(nbk)),
                 f"    const float *xv = vp + ((ci / {vw}) * {tw} + ox0) * {vw} + ci % {vw};"]
        for i in range(p):
            fmas = " ".join(f"{acc[b][i]} += xb * w{b};" for b in range(nbk))
            lines.append(f"    {{ vf xb = vbcast(xv + {i * vw}); {fmas} }}")
        lines.append("}")
        for b in range(nbk):
            lines.append(" ".join(f"vstore(mp + ({b * tw} + ox0 + {i}) * {vw}, {a});" for i, a in enumerate(acc[b])))
        return lines
    lines = [f"for (int pos = 0; pos < 16; pos++) for (int ob = 0; ob < {ob}; ob += {nbk}) {{",
             "    " + " ".join(f"const float *u{b} = U + ((pos * {ob} + ob + {b}) * {c}) * {vw};" for b in range(nbk)),
             f"    const float *vp = Vs + pos * {cb * tw * vw}; float *mp = Ms + (pos * {ob} + ob) * {tw * vw};"]
    lines += ["    " + line for line in row_blocks(tw, 12 if vw == 16 else 6, block, even=True)]
    return lines + ["}"]


def _output_transform(node, geometry, ob: int, tw: int, vw: int, blocked: bool) -> list[str]:
    """Aᵀ M A of each tile, + bias, the chain in registers; stored blocked, or through Ys and
    a transpose a row of VW pixels at a time into NCHW."""
    xs, ws_, kernel, strides, dil, begin, end, out = geometry
    oh, ow = out
    chain = unary_chain(node)
    m = [f"m{p}" for p in range(16)]
    lines = [f"for (int ob = 0; ob < {ob}; ob++) {{", f"    vf bias = vload(Bp + ob * {vw});",
             f"    for (int tx = 0; tx < {tw}; tx++) {{",
             "        " + " ".join(f"vf {m[p]} = vload(Ms + (({p} * {ob} + ob) * {tw} + tx) * {vw});" for p in range(16))]
    for j in range(4):
        lines.append(f"        vf s0{j} = m{j} + m{4 + j} + m{8 + j}, s1{j} = m{4 + j} - m{8 + j} - m{12 + j};")
    ys = {(a, 0): f"s{a}0 + s{a}1 + s{a}2 + bias" for a in range(2)}
    ys.update({(a, 1): f"s{a}1 - s{a}2 - s{a}3 + bias" for a in range(2)})
    row = 2 * tw                                       # Ys's row: whole tiles
    for (a, b), e in ys.items():
        value = apply(chain, f"({e})", True)
        if blocked:
            inside = " && ".join([f"2 * ty + {a} < {oh}"] * (a and oh % 2) + [f"2 * tx + {b} < {ow}"] * (b and ow % 2))
            store = f"vstore(yn + ((ob * {oh} + 2 * ty + {a}) * {ow} + 2 * tx + {b}) * {vw}, {value});"
            lines.append(f"        if ({inside}) {store}" if inside else f"        {store}")
        else:
            lines.append(f"        vstore(Ys + ({a * row} + 2 * tx + {b}) * {vw}, {value});")
    lines.append("    }")
    if not blocked:
        rows = f"(2 * ty + 1 < {oh} ? 2 : 1)" if oh % 2 else "2"
        lines += [f"    for (int a = 0; a < {rows}; a++) for (int col = 0; col < {ow}; col += {vw}) {{",
                  f"        const int n = {ow} - col < {vw} ? {ow} - col : {vw};",
                  f"        vf t[{vw}]; for (int k = 0; k < {vw}; k++) t[k] = vload(Ys + (a * {row} + col + k) * {vw});",
                  f"        vtranspose(t); for (int j = 0; j < {vw}; j++) "
                  f"memcpy(yn + ((ob * {vw} + j) * {oh} + 2 * ty + a) * {ow} + col, &t[j], n * 4);",
                  "    }"]
    return lines + ["}"]


def winograd(prog, node, geometry) -> str:
    x, y = node.inputs[0], node.outputs[0]
    xs, ws_, kernel, strides, dil, begin, end, out = geometry
    nb, c, h, wd = xs
    oc = ws_[0]
    oh, ow = out
    vw = prog.vw
    cb, ob, th, tw = c // vw, oc // vw, -(-oh // 2), -(-ow // 2)
    hp, wp = 2 * th + 2, 2 * tw + 2                  # the padded image, a last half-outside tile's window too
    nbk = 2 if ob % 2 == 0 else 1
    bias = np.zeros(oc, np.float32)
    if len(node.inputs) > 2 and node.inputs[2]:
        bias[:] = prog.graph.consts[node.inputs[2]].reshape(oc)
    bname = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else node.inputs[1] + "@nobias"
    split = prog.share(nb * oc * oh * ow * c * 9, th)
    copies = MAX_THREADS if split else 1                                   # a tile row's scratch per thread
    vsz, msz, ysz = 16 * cb * tw * vw, 16 * ob * tw * vw, (4 * tw + vw) * vw
    xbuf, _ = prog.ws(cb * hp * wp * vw * 4)
    scratch, _ = prog.ws((vsz + msz + ysz) * 4 * copies)
    own = f"{scratch} + (long)tid * {vsz + msz + ysz}" if split else scratch
    lines = [f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)};",
             f"const float *U = {_weights(prog, node, vw)}; const float *Bp = {prog.const(bname + f'@convbias{vw}', bias)};",
             f"float *XB = {xbuf}; float *Vs = {own}; float *Ms = Vs + {vsz}; float *Ys = Ms + {msz}; (void)Ys;",
             f"for (int n = 0; n < {nb}; n++) {{",
             f"    const float *xn = X + n * {c * h * wd}; float *yn = Y + n * {oc * oh * ow};"]
    if split:
        lines += [f"    {{ NNOS_SHARE(rlo, rhi, {h});"]
    lines += ["    " + line for line in _copy_in(x not in prog.blocked, c, h, wd, hp, wp, begin, vw,
                                                  "rlo; r < rhi" if split else f"0; r < {h}")]
    if split:
        lines += ["    }", "    NNOS_SYNC();", f"    {split}"]
    lines.append(f"    for (int ty = {'lo' if split else 0}; ty < {'hi' if split else th}; ty++) {{")
    lines += [f"        for (int cb = 0; cb < {cb}; cb++) for (int tx = 0; tx < {tw}; tx++) {{"]
    lines += ["            " + line for line in _input_transform(cb, hp, wp, tw, vw)] + ["        }"]
    lines += ["        " + line for line in _products(c, ob, nbk, tw, vw)]
    lines += ["        " + line for line in _output_transform(node, geometry, ob, tw, vw, y in prog.blocked)]
    lines += ["    }"]
    if split:
        lines.append("    NNOS_SYNC();")                     # XB is rewritten for the next image
    lines.append("}")
    return indent("\n".join(lines)) + "\n" + after_split(prog, epilogue_pass(prog, node, y, in_registers=True))
