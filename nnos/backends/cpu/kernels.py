"""The generated kernels, one emitter per op: (program, node) → a block of C.

- Gemm / MatMul: each output row vectorized across the columns (the weights stay row-major
  K×N, so a column block is contiguous), four vector accumulators per pass over K, the
  activation epilogue applied in registers before the store.
- Conv (2-D, group 1): the output channels are the vector lanes (weights repacked at bind time
  into [channel block][C][KH][KW][VW]); a register block of output pixels along the row shares
  every weight load; padded inputs are copied into a zero-bordered workspace first, so the
  inner loops have no bounds checks.
- GRU (forward, batch 1, default activations): per time step two vectorized matrix-vector
  products (weights transposed at bind time) and the gate arithmetic, vectorized.
- Relu/Tanh/Sigmoid and same-shape Add/Sub/Mul/Div, alone or as epilogues.
"""
from __future__ import annotations

import numpy as np

from .codegen import Unsupported, apply, elementwise_expr, epilogue_pass, indent, unary_chain


def _f32(prog, *names):
    for n in names:
        if n and prog.type(n).dtype != np.float32:
            raise Unsupported(f"{n!r} is {prog.type(n).dtype}; float32 only")


# --- row-times-matrix, shared by Gemm, MatMul ------------------------------------------------------
def _rows(prog, a: str, b: str, o: str, m: int, k: int, n: int, bias: str | None, bias_rows: bool,
          chain: list[str], packed: tuple[str, np.ndarray] | None = None) -> str:
    """o[m×n] = a[m×k] · b[k×n] (+ bias: n values, or m×n when bias_rows), activations applied.
    ``packed`` (key, array): constant weights, repacked per column block so that each pass over
    K streams one contiguous block (a large layer is bound by reading its weights)."""
    vw = prog.vw
    lines = [f"const float *A = {a}; const float *B = {b}; float *O = {o};"]
    if bias:
        lines.append(f"const float *C = {bias};")
    lines.append(f"for (int m = 0; m < {m}; m++) {{")
    lines.append(f"    const float *ar = A + m * {k}; float *orow = O + m * {n};")
    if bias:
        lines.append(f"    const float *crow = C{' + m * %d' % n if bias_rows else ''};")
    nvec = n // vw
    groups = nvec // 4                 # full groups of four vectors: one loop, not unrolled code
    rest = nvec % 4
    bw = 4 * vw
    if groups:
        if packed is not None:         # [group][K][4·VW], contiguous per group
            arr = packed[1][:k, :groups * bw].reshape(k, groups, bw).transpose(1, 0, 2)
            blocks = prog.const(f"{packed[0]}@groups{bw}", arr)
            brow = f"{blocks} + (size_t)g * {k * bw} + kk * {bw}"
        else:
            brow = f"B + kk * {n} + g * {bw}"
        init = [f"vload(crow + g * {bw} + {i * vw})" if bias else "vsplat(0.0f)" for i in range(4)]
        lines.append(f"    for (int g = 0; g < {groups}; g++) {{")
        lines.append("        " + " ".join(f"vf acc{i} = {init[i]};" for i in range(4)))
        lines.append(f"        for (int kk = 0; kk < {k}; kk++) {{")
        lines.append(f"            vf x = vsplat(ar[kk]); const float *br = {brow};")
        lines.append("            " + " ".join(f"acc{i} += x * vload(br + {i * vw});" for i in range(4)))
        lines.append("        }")
        for i in range(4):
            lines.append(f"        vstore(orow + g * {bw} + {i * vw}, {apply(chain, f'acc{i}', True)});")
        lines.append("    }")
    col = groups * bw
    if rest:
        init = [f"vload(crow + {col + i * vw})" if bias else "vsplat(0.0f)" for i in range(rest)]
        lines.append("    {")
        lines.append("        " + " ".join(f"vf acc{i} = {init[i]};" for i in range(rest)))
        lines.append(f"        for (int kk = 0; kk < {k}; kk++) {{")
        if packed is not None:
            block = prog.const(f"{packed[0]}@cols{col}+{rest * vw}", packed[1][:k, col:col + rest * vw])
            lines.append(f"            vf x = vsplat(ar[kk]); const float *br = {block} + kk * {rest * vw};")
        else:
            lines.append(f"            vf x = vsplat(ar[kk]); const float *br = B + kk * {n} + {col};")
        lines.append("            " + " ".join(f"acc{i} += x * vload(br + {i * vw});" for i in range(rest)))
        lines.append("        }")
        for i in range(rest):
            lines.append(f"        vstore(orow + {col + i * vw}, {apply(chain, f'acc{i}', True)});")
        lines.append("    }")
        col += rest * vw
    if col < n:
        lines.append(f"    for (int j = {col}; j < {n}; j++) {{")
        lines.append(f"        float s = {'crow[j]' if bias else '0.0f'};")
        lines.append(f"        for (int kk = 0; kk < {k}; kk++) s += ar[kk] * B[kk * {n} + j];")
        lines.append(f"        orow[j] = {apply(chain, 's', False)};")
        lines.append("    }")
    lines.append("}")
    return indent("\n".join(lines))


def gemm(prog, node) -> str:
    at = node.attrs
    if at.get("transA", 0) or at.get("transB", 0) or float(at.get("alpha", 1.0)) != 1.0:
        raise Unsupported("transposed or scaled operands (the compiler's prepack removes them for constant B)")
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    _f32(prog, a, b, o)
    m, k = prog.type(a).shape
    kb, n = prog.type(b).shape
    chain = unary_chain(node)
    bexpr, packed = prog.tensor(b), None
    if b in prog.graph.consts:
        packed = (b, prog.graph.consts[b])
    if a in prog.blocked_flat:          # A is a channel-blocked activation: B's rows follow it
        arr = _blocked_rows(prog.graph.consts[b], prog.blocked_flat[a], prog.vw)
        bexpr, packed = prog.const(b + f"@blocked{prog.vw}", arr), (b + f"@blocked{prog.vw}", arr)
    if at.get("bias_row"):
        bias = f"({bexpr} + {(kb - 1) * n})"
        return _rows(prog, prog.tensor(a), bexpr, prog.tensor(o), m, k, n, bias, False, chain, packed) + \
            "\n" + epilogue_pass(prog, node, o)
    bias, rows = None, False
    if len(node.inputs) > 2 and node.inputs[2]:
        c = node.inputs[2]
        _f32(prog, c)
        if float(at.get("beta", 1.0)) != 1.0:
            raise Unsupported("beta != 1")
        shape = prog.type(c).shape
        if shape in ((n,), (1, n)):
            bias = prog.tensor(c)
        elif shape == (m, n):
            bias, rows = prog.tensor(c), True
        elif c in prog.graph.consts:          # a constant that broadcasts: expanded once
            bias, rows = prog.const(c + "@full", np.broadcast_to(prog.graph.consts[c], (m, n))), True
        else:
            raise Unsupported(f"a run-time bias of shape {shape}")
    return _rows(prog, prog.tensor(a), bexpr, prog.tensor(o), m, k, n, bias, rows, chain, packed) + \
        "\n" + epilogue_pass(prog, node, o)


def _blocked_rows(b: np.ndarray, chw: tuple, vw: int) -> np.ndarray:
    """B's first C·H·W rows reordered from NCHW order to channel-blocked order (the rest, a
    bias row, unchanged)."""
    c, h, w = chw
    idx = np.arange(c * h * w).reshape(c // vw, vw, h, w).transpose(0, 2, 3, 1).reshape(-1)
    return np.concatenate([b[:c * h * w][idx], b[c * h * w:]])


def matmul(prog, node) -> str:
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    _f32(prog, a, b, o)
    if len(prog.type(a).shape) != 2 or len(prog.type(b).shape) != 2:
        raise Unsupported("MatMul of other than two 2-D operands")
    m, k = prog.type(a).shape
    _, n = prog.type(b).shape
    packed = (b, prog.graph.consts[b]) if b in prog.graph.consts else None
    return _rows(prog, prog.tensor(a), prog.tensor(b), prog.tensor(o), m, k, n, None, False, unary_chain(node),
                 packed) + \
        "\n" + epilogue_pass(prog, node, o)


# --- convolution ------------------------------------------------------------------------------------
def conv_ok(prog, node) -> bool:
    ins = node.inputs
    return (len(prog.type(ins[0]).shape) == 4 and int(node.attrs.get("group", 1)) == 1 and ins[1] in prog.graph.consts
            and (len(ins) < 3 or not ins[2] or ins[2] in prog.graph.consts))


def conv(prog, node) -> str:
    from ...ops.conv import _geometry
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    _f32(prog, x, w, y)
    xs, ws_ = prog.type(x).shape, prog.type(w).shape
    if len(xs) != 4:
        raise Unsupported(f"{len(xs) - 2}-D convolution (2-D only)")
    if w not in prog.graph.consts:
        raise Unsupported("run-time weights")
    kernel, strides, dil, begin, end, out = _geometry(node, xs, ws_)
    nb, c, h, wd = xs
    oc, cg, kh, kw = ws_
    groups = int(node.attrs.get("group", 1))
    ocg = oc // groups                              # output channels per group; cg: input channels per group
    oh, ow = out
    sh, sw = strides
    dh, dw = dil
    vw = prog.vw
    ocb = -(-ocg // vw)                             # vector blocks per group
    wt = prog.graph.consts[w].astype(np.float32).reshape(groups, ocg, cg, kh, kw)
    packed = np.zeros((groups, ocb * vw, cg, kh, kw), np.float32)
    packed[:, :ocg] = wt
    packed = packed.reshape(groups, ocb, vw, cg, kh, kw).transpose(0, 1, 3, 4, 5, 2)   # [g][ob][c][kh][kw][lane]
    bias = np.zeros((groups, ocb * vw), np.float32)
    if len(node.inputs) > 2 and node.inputs[2]:
        if node.inputs[2] not in prog.graph.consts:
            raise Unsupported("a run-time bias")
        bias[:, :ocg] = prog.graph.consts[node.inputs[2]].reshape(groups, ocg)
    wexpr = prog.const(w + f"@conv{vw}", packed)
    bname = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else w + "@nobias"
    bexpr = prog.const(bname + f"@convbias{vw}", bias)
    chain = unary_chain(node)
    hp, wp = h + begin[0] + end[0], wd + begin[1] + end[1]
    padded = any(begin) or any(end)
    xb, yb = x in prog.blocked, y in prog.blocked       # channel-blocked input / output
    lines = [f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)};",
             f"const float *Wp = {wexpr}; const float *Bp = {bexpr};"]
    if padded:
        pad, _ = prog.ws(c * hp * wp * 4)
        lines.append(f"float *XP = {pad};")
    lines.append(f"for (int n = 0; n < {nb}; n++) {{")
    lines.append(f"    const float *xn = X + n * {c * h * wd}; float *yn = Y + n * {oc * oh * ow};")
    if padded and xb:
        lines.append(f"    for (int cb = 0; cb < {c // vw}; cb++) for (int r = 0; r < {h}; r++)")
        lines.append(f"        memcpy(XP + ((cb * {hp} + r + {begin[0]}) * {wp} + {begin[1]}) * {vw}, "
                     f"xn + (cb * {h} + r) * {wd * vw}, {wd * vw * 4});")
    elif padded:
        lines.append(f"    for (int cc = 0; cc < {c}; cc++) for (int r = 0; r < {h}; r++)")
        lines.append(f"        memcpy(XP + (cc * {hp} + r + {begin[0]}) * {wp} + {begin[1]}, "
                     f"xn + (cc * {h} + r) * {wd}, {wd * 4});")
    lines.append(f"    const float *src = {'XP' if padded else 'xn'};")
    lines.append(f"    for (int gi = 0; gi < {groups}; gi++) for (int ob = 0; ob < {ocb}; ob++) {{")
    lines.append(f"        const float *wb = Wp + (gi * {ocb} + ob) * {cg * kh * kw * vw}; "
                 f"vf bias = vload(Bp + (gi * {ocb} + ob) * {vw});")
    lines.append(f"        int nj = {ocg} - ob * {vw} < {vw} ? {ocg} - ob * {vw} : {vw};")
    lines.append(f"        for (int oy = 0; oy < {oh}; oy++) {{")
    # output pixels per register block: as many as the registers allow, split evenly along the row
    pmax = 12 if vw == 16 else 6
    p = -(-ow // -(-ow // pmax))
    full = ow // p
    if full:
        lines.append(f"            for (int ox0 = 0; ox0 < {full * p}; ox0 += {p}) {{")
        lines.append(indent(_conv_block(p, cg, kh, kw, hp, wp, sh, sw, dh, dw, oh, ow, vw, chain, xb, yb, ocg), 16))
        lines.append("            }")
    if ow % p:
        lines.append(f"            {{ const int ox0 = {full * p};")
        lines.append(indent(_conv_block(ow % p, cg, kh, kw, hp, wp, sh, sw, dh, dw, oh, ow, vw, chain, xb, yb, ocg),
                            16))
        lines.append("            }")
    lines += ["        }", "    }", "}"]
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


def _conv_block(p, c, kh, kw, hp, wp, sh, sw, dh, dw, oh, ow, vw, chain, xb=False, yb=False, ocg=0) -> str:
    """``p`` output pixels × one vector of output channels of group ``gi``, accumulated in
    registers; ``c`` input channels per group. The input is NCHW or channel-blocked (``xb``,
    one group only), the output likewise (``yb``: whole-vector stores)."""
    acc = [f"a{i}" for i in range(p)]
    if xb:      # element (cc, row, col) at ((cc / VW · HP + row) · WP + col) · VW + cc % VW
        base = f"src + ((cc / {vw} * {hp} + oy * {sh} + ky * {dh}) * {wp} + ox0 * {sw}) * {vw} + cc % {vw}"
        col = vw
    else:
        base = f"src + ((gi * {c} + cc) * {hp} + oy * {sh} + ky * {dh}) * {wp} + ox0 * {sw}"
        col = 1
    lines = [" ".join(f"vf {a} = bias;" for a in acc),
             f"for (int cc = 0; cc < {c}; cc++) for (int ky = 0; ky < {kh}; ky++) {{",
             f"    const float *xr = {base};",
             f"    const float *wr = wb + (cc * {kh} + ky) * {kw * vw};",
             f"    for (int kx = 0; kx < {kw}; kx++) {{",
             f"        vf wv = vload(wr + kx * {vw}); const float *xk = xr + kx * {dw * col};",
             "        " + " ".join(f"{a} += vbcast(xk + {i * sw * col}) * wv;" for i, a in enumerate(acc)),
             "    }", "}"]
    if yb:
        for i, a in enumerate(acc):
            lines.append(f"vstore(yn + ((ob * {oh} + oy) * {ow} + ox0 + {i}) * {vw}, {apply(chain, a, True)});")
        return "\n".join(lines)
    lines.append(f"float tile[{p}][{vw}];")
    for i, a in enumerate(acc):
        lines.append(f"vstore(tile[{i}], {apply(chain, a, True)});")
    # channel by channel, a run of neighbouring pixels each
    lines.append(f"for (int j = 0; j < nj; j++) {{ float *yr = yn + (gi * {ocg} + ob * {vw} + j) * {oh * ow} "
                 f"+ oy * {ow} + ox0;")
    lines.append(f"    for (int i = 0; i < {p}; i++) yr[i] = tile[i][j]; }}")
    return "\n".join(lines)


# --- GRU --------------------------------------------------------------------------------------------
_GEMV = """
static void nnos_gemv(const float *x, const float *W, int K, int N, const float *bias, float *out) {
    int j = 0;
    for (; j + VW <= N; j += VW) {
        vf acc = bias ? vload(bias + j) : vsplat(0.0f);
        for (int k = 0; k < K; k++) acc += vsplat(x[k]) * vload(W + k * N + j);
        vstore(out + j, acc);
    }
    for (; j < N; j++) {
        float s = bias ? bias[j] : 0.0f;
        for (int k = 0; k < K; k++) s += x[k] * W[k * N + j];
        out[j] = s;
    }
}
"""


def gru(prog, node) -> str:
    at = node.attrs
    direction = at.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction != "forward" or int(at.get("layout", 0)) or at.get("clip") is not None:
        raise Unsupported("a GRU other than forward, layout 0, without clip")
    if at.get("activations") and [a.decode() if isinstance(a, bytes) else a for a in at["activations"]] != ["Sigmoid", "Tanh"]:
        raise Unsupported("GRU activations other than Sigmoid, Tanh")
    ins = list(node.inputs) + [""] * (6 - len(node.inputs))
    x, w, r, b, seq, h0 = ins[:6]
    if seq:
        raise Unsupported("sequence_lens")
    if w not in prog.graph.consts or r not in prog.graph.consts or (b and b not in prog.graph.consts):
        raise Unsupported("run-time weights")
    _f32(prog, x, h0, *node.outputs)
    t_len, batch, i_size = prog.type(x).shape
    if batch != 1:
        raise Unsupported("batch > 1")
    hs = int(at["hidden_size"])
    wt = prog.const(w + "@T", prog.graph.consts[w][0].T)          # [I][3H]
    rt = prog.const(r + "@T", prog.graph.consts[r][0].T)          # [H][3H]
    bias = prog.graph.consts[b][0] if b else np.zeros(6 * hs, np.float32)
    bw, br = prog.const((b or w) + "@Wb", bias[:3 * hs]), prog.const((b or w) + "@Rb", bias[3 * hs:])
    hbuf, _ = prog.ws(hs * 4)
    gx, _ = prog.ws(3 * hs * 4)
    gh, _ = prog.ws(3 * hs * 4)
    rh, _ = prog.ws(hs * 4)
    y = node.outputs[0] if node.outputs else ""
    yh = node.outputs[1] if len(node.outputs) > 1 else ""
    lbr = int(at.get("linear_before_reset", 0))
    if node.epilogue:
        raise Unsupported("an epilogue on a GRU")
    if _GEMV not in prog.helpers:
        prog.helpers.append(_GEMV)
    lines = [f"const float *X = {prog.tensor(x)}; float *h = {hbuf}; float *gx = {gx}; float *gh = {gh};",
             f"float *rh = {rh}; (void)rh;"]
    lines.append(f"memcpy(h, {prog.tensor(h0)}, {hs * 4});" if h0 else f"memset(h, 0, {hs * 4});")
    lines.append(f"for (int t = 0; t < {t_len}; t++) {{")
    lines.append(f"    nnos_gemv(X + t * {i_size}, {wt}, {i_size}, {3 * hs}, {bw}, gx);")
    if lbr:
        lines.append(f"    nnos_gemv(h, {rt}, {hs}, {3 * hs}, {br}, gh);")
        upd = ("vf hh = vtanh(vload(gx + 2 * H + j) + r * vload(gh + 2 * H + j));",
               "float hh = stanh(gx[2 * H + j] + r * gh[2 * H + j]);")
    else:
        # (r ⊙ h)·Rhᵀ needs r first: z and r from the full product, then the h-gate product again
        lines.append(f"    nnos_gemv(h, {rt}, {hs}, {3 * hs}, {br}, gh);")
        lines.append(f"    for (int j = 0; j < {hs}; j++) rh[j] = ssigmoid(gx[{hs} + j] + gh[{hs} + j]) * h[j];")
        lines.append(f"    for (int j = 0; j < {hs}; j++) {{ float s = ({br})[{2 * hs} + j];"
                     f" for (int k = 0; k < {hs}; k++) s += rh[k] * ({rt})[k * {3 * hs} + {2 * hs} + j];"
                     f" gh[{2 * hs} + j] = s; }}")
        upd = ("vf hh = vtanh(vload(gx + 2 * H + j) + vload(gh + 2 * H + j)); (void)r;",
               "float hh = stanh(gx[2 * H + j] + gh[2 * H + j]); (void)r;")
    lines.append(f"    enum {{ H = {hs} }};")
    lines.append("    int j = 0;")
    lines.append("    for (; j + VW <= H; j += VW) {")
    lines.append("        vf z = vsigmoid(vload(gx + j) + vload(gh + j));")
    lines.append("        vf r = vsigmoid(vload(gx + H + j) + vload(gh + H + j));")
    lines.append("        " + upd[0])
    lines.append("        vstore(h + j, (1.0f - z) * hh + z * vload(h + j));")
    lines.append("    }")
    lines.append("    for (; j < H; j++) {")
    lines.append("        float z = ssigmoid(gx[j] + gh[j]); float r = ssigmoid(gx[H + j] + gh[H + j]);")
    lines.append("        " + upd[1])
    lines.append("        h[j] = (1.0f - z) * hh + z * h[j];")
    lines.append("    }")
    if y:
        lines.append(f"    memcpy({prog.tensor(y)} + t * {hs}, h, {hs * 4});")
    lines.append("}")
    if yh:
        lines.append(f"memcpy({prog.tensor(yh)}, h, {hs * 4});")
    return indent("\n".join(lines))


# --- elementwise ------------------------------------------------------------------------------------
def elementwise(prog, node) -> str:
    """One elementwise op (and its epilogue chain) over the output, vectorized."""
    o = node.outputs[0]
    _f32(prog, o)
    shape = prog.type(o).shape
    n = int(np.prod(shape))
    chain = unary_chain(node)
    ins = list(node.inputs)
    _f32(prog, *[i for i in ins if i])
    vec = elementwise_expr(prog, node.op, ins, shape, True, node.attrs)
    sca = elementwise_expr(prog, node.op, ins, shape, False, node.attrs)
    code = [f"float *O = {prog.tensor(o)};", "int i = 0;",
            f"for (; i + VW <= {n}; i += VW) vstore(O + i, {apply(chain, vec, True)});",
            f"for (; i < {n}; i++) O[i] = {apply(chain, sca, False)};"]
    return indent("\n".join(code)) + "\n" + epilogue_pass(prog, node, o)


def view(prog, node) -> str:
    """A reshape the memory plan could not alias (its input is a weight, or it has an epilogue)."""
    i, o = node.inputs[0], node.outputs[0]
    _f32(prog, i, o)
    n = int(np.prod(prog.type(o).shape))
    chain = unary_chain(node)
    return indent("\n".join([f"const float *A = {prog.tensor(i)}; float *O = {prog.tensor(o)};", "int i = 0;",
                             f"for (; i + VW <= {n}; i += VW) vstore(O + i, {apply(chain, 'vload(A + i)', True)});",
                             f"for (; i < {n}; i++) O[i] = {apply(chain, 'A[i]', False)};"])) + \
        "\n" + epilogue_pass(prog, node, o)


# --- pooling ---------------------------------------------------------------------------------------
def pool(prog, node) -> str:
    """MaxPool / AveragePool, 2-D, NCHW: windows clipped to the input (max ignores padding, the
    average divides by the counted positions: the numpy backend's own table of 1/count)."""
    from ...ops.pool import _geometry, _inverse_counts
    x, y = node.inputs[0], node.outputs[0]
    if len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("MaxPool's Indices output")
    _f32(prog, x, y)
    xs = prog.type(x).shape
    if len(xs) != 4:
        raise Unsupported(f"{len(xs) - 2}-D pooling (2-D only)")
    kernel, strides, dil, begin, end, out, padded = _geometry(node, xs)
    nb, c, h, wd = xs
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, strides, dil, out
    is_max = node.op == "MaxPool"
    lines = [f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)};"]
    if not is_max:
        inv = _inverse_counts(node, xs, kernel, strides, dil, begin, out, padded, np.float32).reshape(oh, ow)
        lines.append(f"const float *INV = {prog.const(y + '@poolinv', inv)};")
    lines += [f"for (int nc = 0; nc < {nb * c}; nc++) {{",
              f"    const float *xc = X + nc * {h * wd}; float *yc = Y + nc * {oh * ow};",
              f"    for (int oy = 0; oy < {oh}; oy++) for (int ox = 0; ox < {ow}; ox++) {{",
              f"        float m = {'-__builtin_inff()' if is_max else '0.0f'};",
              f"        for (int ky = 0; ky < {kh}; ky++) {{",
              f"            int iy = oy * {sh} - {begin[0]} + ky * {dh}; if (iy < 0 || iy >= {h}) continue;",
              f"            for (int kx = 0; kx < {kw}; kx++) {{",
              f"                int ix = ox * {sw} - {begin[1]} + kx * {dw}; if (ix < 0 || ix >= {wd}) continue;",
              "                float v = xc[iy * %d + ix];" % wd,
              "                " + ("m = (v != v || v > m) ? v : m;" if is_max else "m += v;"),
              "            }", "        }",
              f"        yc[oy * {ow} + ox] = {apply(unary_chain(node), 'm' if is_max else 'm * INV[oy * %d + ox]' % ow, False)};",
              "    }", "}"]
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


def global_average(prog, node) -> str:
    x, y = node.inputs[0], node.outputs[0]
    _f32(prog, x, y)
    xs = prog.type(x).shape
    n = int(np.prod(xs[2:]))
    lines = [f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)};",
             f"for (int nc = 0; nc < {xs[0] * xs[1]}; nc++) {{",
             f"    const float *xc = X + nc * {n}; vf acc = vsplat(0.0f); int i = 0;",
             f"    for (; i + VW <= {n}; i += VW) acc += vload(xc + i);",
             "    float s = 0.0f; for (int j = 0; j < VW; j++) s += acc[j];",
             f"    for (; i < {n}; i++) s += xc[i];",
             f"    Y[nc] = {apply(unary_chain(node), f's * (1.0f / {n})', False)};",
             "}"]
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


def softmax(prog, node) -> str:
    """Softmax over the last axis: max, exp, sum, divide, row by row (a NaN in a row makes the
    row NaN, as in the reference)."""
    x, y = node.inputs[0], node.outputs[0]
    _f32(prog, x, y)
    shape = prog.type(x).shape
    axis = int(node.attrs.get("axis", -1))
    if axis % len(shape) != len(shape) - 1:
        raise Unsupported(f"Softmax over axis {axis} of {len(shape)} (the last axis only)")
    n = shape[-1]
    rows = int(np.prod(shape[:-1]))
    lines = [f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)};",
             f"for (int r = 0; r < {rows}; r++) {{",
             f"    const float *xr = X + r * {n}; float *yr = Y + r * {n};",
             "    float m = xr[0];",
             f"    for (int i = 1; i < {n}; i++) m = (xr[i] != xr[i] || xr[i] > m) ? xr[i] : m;",
             "    float s = 0.0f;",
             f"    for (int i = 0; i < {n}; i++) {{ yr[i] = expf(xr[i] - m); s += yr[i]; }}",
             "    float inv = 1.0f / s;",
             f"    for (int i = 0; i < {n}; i++) yr[i] *= inv;",
             "}"]
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


EMITTERS = {"Gemm": gemm, "MatMul": matmul, "Conv": conv, "GRU": gru,
            "Relu": elementwise, "Tanh": elementwise, "Sigmoid": elementwise,
            "LeakyRelu": elementwise, "Clip": elementwise, "Softmax": softmax,
            "Add": elementwise, "Sub": elementwise, "Mul": elementwise, "Div": elementwise,
            "MaxPool": pool, "AveragePool": pool, "GlobalAveragePool": global_average,
            "Flatten": view, "Reshape": view, "Squeeze": view, "Unsqueeze": view, "Identity": view}
