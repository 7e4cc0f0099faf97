"""3×3 and 5×5 convolutions at stride 1 by Winograd's F(2×2, r×r): (r + 1)² multiply-adds per
input and output channel for each 2×2 block of outputs, where the direct form takes 4r²
(3×3: 16 for 36; 5×5: 36 for 100).

    V = Bᵀ d B      each (r+1)² input tile d, a vector of VW channels per value
    M = Σ_c U ⊙ V   (r+1)² products of [tiles × C] by [C × C_out]; U = G g Gᵀ, the weights
                    transformed once, here
    Y = Aᵀ M A      the tile's 2×2 outputs, then the bias and the chain in registers

The matrices are Toom-Cook's for the points 0, ±1 (r = 3) and 0, ±1, ±2 (r = 5) and infinity,
made exactly (fractions) by ``matrices``. A row of tiles at a time, its V and M small enough
for the first- or second-level cache: the image is copied once into a zero-bordered,
channel-blocked workspace (an NCHW input transposed VW channels by VW pixels in registers),
each tile row transformed, multiplied (each V value broadcast against a vector of output
channels, a register block of tiles per weight load) and transformed back; an NCHW output is
stored a transposed row of VW pixels at a time. The values differ from the direct sum in the
last bits (the transforms add and subtract before the products; 5×5's coefficients up to 5
lose a little more). On a team, each thread its own tile rows.
"""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

from .emit import after_split, indent, row_blocks
from .elementwise import apply, epilogue_pass, unary_chain
from .team import MAX_THREADS

POINTS = {3: (0, 1, -1), 5: (0, 1, -1, 2, -2)}


def _product(p: list, q: list) -> list:
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, x in enumerate(p):
        for j, y in enumerate(q):
            out[i + j] += x * y
    return out


@functools.lru_cache(maxsize=None)
def matrices(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Aᵀ [2 × n], G [n × r], Bᵀ [n × n]) of F(2, r), n = r + 1: Aᵀ evaluates at the points,
    G interpolates (Lagrange, exact fractions), Bᵀ holds the node polynomials' coefficients."""
    a = [Fraction(p) for p in POINTS[r]]
    n = r + 1
    at = [[x ** i for x in a] + [Fraction(i == 1)] for i in range(2)]
    g, bt = [], []
    for j, x in enumerate(a):
        f, poly = Fraction(1), [Fraction(1)]
        for k, y in enumerate(a):
            if k != j:
                f *= x - y
                poly = _product(poly, [-y, Fraction(1)])
        g.append([x ** k / f for k in range(r)])
        bt.append(poly + [Fraction(0)] * (n - len(poly)))
    g.append([Fraction(k == r - 1) for k in range(r)])
    whole = [Fraction(1)]
    for y in a:
        whole = _product(whole, [-y, Fraction(1)])
    bt.append(whole)
    return tuple(np.array(m, dtype=np.float64) for m in (at, g, bt))


def _combine(coefs, names) -> str:
    """Σ coef·name as C over vectors, zero terms left out (±1 without a multiply)."""
    terms = []
    for c, v in zip(coefs, names):
        if c == 0:
            continue
        sign = "-" if c < 0 else "+"
        mag = abs(float(c))
        terms.append(f"{sign} {v}" if mag == 1 else f"{sign} {mag!r}f * {v}")
    if not terms:
        return "vsplat(0.0f)"
    text = " ".join(terms)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def winograd_ok(prog, node, geometry) -> bool:
    """3×3 or 5×5, stride 1, undilated, one group, whole vectors of input and output channels,
    and an output the 2×2 tiles cover with at most half as much again (an odd size: a last tile
    row or column half outside, computed and not stored)."""
    xs, ws_, kernel, strides, dil, begin, end, out = geometry
    vw = prog.vw
    covered = 4 * -(-out[0] // 2) * -(-out[1] // 2)
    return (int(node.attrs.get("group", 1)) == 1 and tuple(kernel) in ((3, 3), (5, 5)) and tuple(strides) == (1, 1)
            and tuple(dil) == (1, 1) and out[1] >= 4 and 2 * covered <= 3 * out[0] * out[1]
            and xs[1] % vw == 0 and ws_[0] % vw == 0)


def _weights(prog, node, vw: int) -> str:
    """U[pos][out block][c][lane] = (G g Gᵀ)[pos] of output channel block·VW + lane, input c."""
    w = prog.graph.consts[node.inputs[1]].astype(np.float64)              # [C_out][C][r][r]
    _, g, _ = matrices(w.shape[2])
    u = np.einsum("ai,ocij,bj->abco", g, w, g)                            # [n][n][C][C_out]
    oc, c = w.shape[:2]
    u = u.reshape(-1, c, oc // vw, vw).transpose(0, 2, 1, 3)              # [pos][ob][c][lane]
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


def _input_transform(r: int, nblocks: int, hp: int, wp: int, tw: int, vw: int) -> list[str]:
    """Bᵀ d B of tile (ty, tx) of block cb: n² loads, the sums of Bᵀ's rows, n² stores into
    Vs[pos][cb][tx]."""
    _, _, bt = matrices(r)
    n = r + 1
    d = [[f"d{i}_{j}" for j in range(n)] for i in range(n)]
    lines = [f"const float *x = XB + ((cb * {hp} + 2 * ty) * {wp} + 2 * tx) * {vw};",
             " ".join(f"vf {d[i][j]} = vload(x + {(i * wp + j) * vw});" for i in range(n) for j in range(n))]
    for j in range(n):
        lines.append("vf " + ", ".join(f"t{i}_{j} = {_combine(bt[i], [d[k][j] for k in range(n)])}" for i in range(n)) + ";")
    for i in range(n):
        v = [_combine(bt[j], [f"t{i}_{k}" for k in range(n)]) for j in range(n)]
        lines.append(" ".join(f"vstore(Vs + (({n * i + j} * {nblocks} + cb) * {tw} + tx) * {vw}, {v[j]});"
                              for j in range(n)))
    return lines


def _products(npos: int, c: int, ob: int, nbk: int, tw: int, vw: int) -> list[str]:
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
    lines = [f"for (int pos = 0; pos < {npos}; pos++) for (int ob = 0; ob < {ob}; ob += {nbk}) {{",
             "    " + " ".join(f"const float *u{b} = U + ((pos * {ob} + ob + {b}) * {c}) * {vw};" for b in range(nbk)),
             f"    const float *vp = Vs + pos * {cb * tw * vw}; float *mp = Ms + (pos * {ob} + ob) * {tw * vw};"]
    lines += ["    " + line for line in row_blocks(tw, 12 if vw == 16 else 6, block, even=True)]
    return lines + ["}"]


def _output_transform(prog, node, geometry, ob: int, tw: int, vw: int, blocked: bool) -> list[str]:
    """Aᵀ M A of each tile, + bias, the chain in registers; stored blocked, or through Ys and
    a transpose a row of VW pixels at a time into NCHW."""
    xs, ws_, kernel, strides, dil, begin, end, out = geometry
    oh, ow = out
    chain = unary_chain(prog, node)
    at, _, _ = matrices(kernel[0])
    n = kernel[0] + 1
    m = [f"m{p}" for p in range(n * n)]
    lines = [f"for (int ob = 0; ob < {ob}; ob++) {{", f"    vf bias = vload(Bp + ob * {vw});",
             f"    for (int tx = 0; tx < {tw}; tx++) {{",
             "        " + " ".join(f"vf {m[p]} = vload(Ms + (({p} * {ob} + ob) * {tw} + tx) * {vw});" for p in range(n * n))]
    for j in range(n):
        lines.append("        vf " + ", ".join(f"s{a}_{j} = {_combine(at[a], [m[k * n + j] for k in range(n)])}"
                                                for a in range(2)) + ";")
    ys = {(a, b): f"{_combine(at[b], [f's{a}_{k}' for k in range(n)])} + bias" for a in range(2) for b in range(2)}
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
    r = kernel[0]
    npos = (r + 1) ** 2
    cb, ob, th, tw = c // vw, oc // vw, -(-oh // 2), -(-ow // 2)
    hp, wp = 2 * th + r - 1, 2 * tw + r - 1          # the padded image, a last half-outside tile's window too
    nbk = 2 if ob % 2 == 0 else 1
    bias = np.zeros(oc, np.float32)
    if len(node.inputs) > 2 and node.inputs[2]:
        bias[:] = prog.graph.consts[node.inputs[2]].reshape(oc)
    bname = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else node.inputs[1] + "@nobias"
    split = prog.share(nb * oc * oh * ow * c * r * r, th)
    copies = MAX_THREADS if split else 1                                   # a tile row's scratch per thread
    vsz, msz, ysz = npos * cb * tw * vw, npos * ob * tw * vw, (4 * tw + vw) * vw
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
    lines += ["            " + line for line in _input_transform(r, cb, hp, wp, tw, vw)] + ["        }"]
    lines += ["        " + line for line in _products(npos, c, ob, nbk, tw, vw)]
    lines += ["        " + line for line in _output_transform(prog, node, geometry, ob, tw, vw, y in prog.blocked)]
    lines += ["    }"]
    if split:
        lines.append("    NNOS_SYNC();")                     # XB is rewritten for the next image
    lines.append("}")
    return indent("\n".join(lines)) + "\n" + after_split(prog, epilogue_pass(prog, node, y, in_registers=True))
