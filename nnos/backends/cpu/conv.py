"""Convolutions.

The fast form (float32, 1-D or 2-D, constant weights): the output channels are the vector
lanes (weights repacked at bind time into [group][channel block][C][KH][KW][VW]); a register
block of output pixels along the row shares every weight load; a padded input is copied into a
zero-bordered workspace first, so the inner loops have no bounds checks; outputs that only
other convolutions read stay channel-blocked (codegen.choose_layouts). Depthwise ones have
their own kernel (depthwise.py).

The generic form (any dtype, any number of spatial dims, run-time weights): a direct loop
per output element over its window, taps outside the input skipped. ConvTranspose likewise,
in gather form: each output element sums the input positions whose window covers it.
"""
from __future__ import annotations

import numpy as np

from .ctype import compute, storage
from .depthwise import depthwise, is_depthwise
from .emit import after_split, indent, row_blocks, store_transposed
from .elementwise import apply, epilogue_pass, unary_chain
from .loops import counters, row_major, window_taps
from .pointwise import pointwise, pointwise_fits, pointwise_ok
from .winograd import winograd, winograd_ok


def conv_ok(prog, node) -> bool:
    """The fast form applies on 2-D data with one group, or depthwise: its input and output may
    be channel-blocked."""
    g = _fast_geometry(prog, node)
    return g is not None and len(prog.type(node.inputs[0]).shape) == 4 and \
        (int(node.attrs.get("group", 1)) == 1 or is_depthwise(prog, node, g))


def stays_nchw(prog, producer, reader) -> bool:
    """Whether the tensor ``producer`` writes and the convolution ``reader`` reads stays NCHW:
    between a 1×1 convolution and a depthwise one (a MobileNet's expansion and projection) each
    has a form along NCHW rows (pointwise.py, depthwise.py) faster than its channel-blocked one
    (mbv2_s: AVX-512 −6 %, AVX2 −4 %)."""
    pg, rg = _fast_geometry(prog, producer), _fast_geometry(prog, reader)
    if pg is None or rg is None:
        return False
    return (pointwise_fits(prog, producer, pg) and is_depthwise(prog, reader, rg)) or \
        (is_depthwise(prog, producer, pg) and pointwise_fits(prog, reader, rg))


def _fast_geometry(prog, node):
    """A 1-D or 2-D float32 convolution with constant weights as 2-D geometry (a 1-D one is
    2-D with height 1), or None when the fast form does not apply."""
    from ...ops.conv import _geometry
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
    xs, ws_ = prog.type(x).shape, prog.type(w).shape
    if (not all(prog.type(t).dtype == np.float32 for t in (x, w, y, b) if t) or len(xs) not in (3, 4)
            or w not in prog.graph.consts or (b and b not in prog.graph.consts)):
        return None
    kernel, strides, dil, begin, end, out = _geometry(node, xs, ws_)
    if len(xs) == 3:
        return ((xs[0], xs[1], 1, xs[2]), (ws_[0], ws_[1], 1, ws_[2]), [1, *kernel], [1, *strides], [1, *dil],
                [0, *begin], [0, *end], [1, *out])
    return xs, ws_, kernel, strides, dil, begin, end, out


def _fast_conv(prog, node, geometry) -> str:
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    xs, ws_, kernel, strides, dil, begin, end, out = geometry
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
        bias[:, :ocg] = prog.graph.consts[node.inputs[2]].reshape(groups, ocg)
    wexpr = prog.const(w + f"@conv{vw}", packed)
    bname = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else w + "@nobias"
    bexpr = prog.const(bname + f"@convbias{vw}", bias)
    chain = unary_chain(prog, node)
    hp, wp = h + begin[0] + end[0], wd + begin[1] + end[1]
    padded = any(begin) or any(end)
    xb, yb = x in prog.blocked, y in prog.blocked       # channel-blocked input / output
    lines = [f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)};",
             f"const float *Wp = {wexpr}; const float *Bp = {bexpr};"]
    if padded:
        pad, _ = prog.ws(c * hp * wp * 4)
        lines.append(f"float *XP = {pad};")
    nbk = 2 if ocb % 2 == 0 else 1                   # output-channel blocks sharing each input broadcast
    # on a team (team.py): each thread its own output-channel blocks, or rows when there are few
    by_blocks = groups == 1 and ocb // nbk >= 4
    split = prog.share(nb * oc * oh * ow * cg * kh * kw, ocb // nbk if by_blocks else oh) if groups == 1 else None
    ob_range, oy_range = (0, ocb), (0, oh)
    if split and by_blocks:
        ob_range = (f"lo * {nbk}", f"hi * {nbk}")
    elif split:
        oy_range = ("lo", "hi")
    lines.append(f"for (int n = 0; n < {nb}; n++) {{")
    lines.append(f"    const float *xn = X + n * {c * h * wd}; float *yn = Y + n * {oc * oh * ow};")
    rows = c // vw if xb else c
    if padded:
        lines.append(f"    {{ NNOS_SHARE(plo, phi, {rows});" if split else f"    {{ const int plo = 0, phi = {rows};")
    if padded and xb:
        lines.append(f"    for (int cb = plo; cb < phi; cb++) for (int r = 0; r < {h}; r++)")
        lines.append(f"        memcpy(XP + ((cb * {hp} + r + {begin[0]}) * {wp} + {begin[1]}) * {vw}, "
                     f"xn + (cb * {h} + r) * {wd * vw}, {wd * vw * 4}); }}")
    elif padded:
        lines.append(f"    for (int cc = plo; cc < phi; cc++) for (int r = 0; r < {h}; r++)")
        lines.append(f"        memcpy(XP + (cc * {hp} + r + {begin[0]}) * {wp} + {begin[1]}, "
                     f"xn + (cc * {h} + r) * {wd}, {wd * 4}); }}")
    if padded and split:
        lines.append("    NNOS_SYNC();")
    if split:
        lines.append(f"    {split}")
    lines.append(f"    const float *src = {'XP' if padded else 'xn'};")
    wsz = cg * kh * kw * vw
    lines.append(f"    for (int gi = 0; gi < {groups}; gi++) for (int ob = {ob_range[0]}; ob < {ob_range[1]}; ob += {nbk}) {{")
    for b in range(nbk):
        lines.append(f"        const float *wb{b} = Wp + (gi * {ocb} + ob + {b}) * {wsz}; "
                     f"vf bias{b} = vload(Bp + (gi * {ocb} + ob + {b}) * {vw});")
    lines.append(f"        for (int oy = {oy_range[0]}; oy < {oy_range[1]}; oy++) {{")
    # output pixels per register block: as many as the registers allow, split evenly along the row
    pmax = 12 if vw == 16 else 6
    geo = (cg, kh, kw, hp, wp, sh, sw, dh, dw, oh, ow, vw)
    blocks = row_blocks(ow, pmax, lambda n: _conv_block(n, nbk, geo, chain, xb, yb, ocg).split("\n"),
                        even=kh * kw > 1)                      # measured: 1×1 (MobileNet's at 32 wide) 3 % slower even
    lines += ["            " + line for line in blocks]
    lines += ["        }", "    }"]
    if split and nb > 1:
        lines.append("    NNOS_SYNC();")                 # every thread done with XP before the next image's copy
    lines.append("}")
    return indent("\n".join(lines)) + "\n" + after_split(prog, epilogue_pass(prog, node, y, in_registers=True))


def _conv_block(p, nbk, geo, chain, xb=False, yb=False, ocg=0) -> str:
    """``p`` output pixels × ``nbk`` vectors of output channels (blocks ob … ob+nbk-1 of group
    ``gi``), accumulated in registers: each input value is broadcast once for all the blocks,
    each weight vector loaded once for all the pixels. ``c`` input channels per group. The
    input is NCHW or channel-blocked (``xb``, one group only), the output likewise (``yb``:
    whole-vector stores)."""
    c, kh, kw, hp, wp, sh, sw, dh, dw, oh, ow, vw = geo
    acc = [[f"a{b}_{i}" for i in range(p)] for b in range(nbk)]
    if xb:      # element (cc, row, col) at ((cc / VW · HP + row) · WP + col) · VW + cc % VW
        base = f"src + ((cc / {vw} * {hp} + oy * {sh} + ky * {dh}) * {wp} + ox0 * {sw}) * {vw} + cc % {vw}"
        col = vw
    else:
        base = f"src + ((gi * {c} + cc) * {hp} + oy * {sh} + ky * {dh}) * {wp} + ox0 * {sw}"
        col = 1
    lines = [" ".join(f"vf {a} = bias{b};" for b in range(nbk) for a in acc[b]),
             f"for (int cc = 0; cc < {c}; cc++) for (int ky = 0; ky < {kh}; ky++) {{",
             f"    const float *xr = {base};",
             "    " + " ".join(f"const float *wr{b} = wb{b} + (cc * {kh} + ky) * {kw * vw};" for b in range(nbk)),
             f"    for (int kx = 0; kx < {kw}; kx++) {{",
             "        " + " ".join(f"vf w{b} = vload(wr{b} + kx * {vw});" for b in range(nbk)) +
             f" const float *xk = xr + kx * {dw * col};"]
    for i in range(p):
        lines.append(f"        {{ vf xv = vbcast(xk + {i * sw * col}); " +
                     " ".join(f"{acc[b][i]} += xv * w{b};" for b in range(nbk)) + " }")
    lines += ["    }", "}"]
    for b in range(nbk):
        if yb:
            for i, a in enumerate(acc[b]):
                lines.append(f"vstore(yn + (((ob + {b}) * {oh} + oy) * {ow} + ox0 + {i}) * {vw}, "
                             f"{apply(chain, a, True)});")
            continue
        # channel by channel, a run of neighbouring pixels each
        lines.append(f"{{ float *yr = yn + (gi * {ocg} + (ob + {b}) * {vw}) * {oh * ow} + oy * {ow} + ox0;")
        lines += store_transposed([apply(chain, a, True) for a in acc[b]], vw, lambda j: f"yr + {j} * {oh * ow}",
                                  None if ocg % vw == 0 else f"{ocg} - (ob + {b}) * {vw}")
        lines.append("}")
    return "\n".join(lines)


def _direct(prog, node, kernel, out, taps: list[str], skip: str, group_of: str, weight_index: str) -> str:
    """The generic form of Conv and ConvTranspose: for each output element, the sum over its
    group's input channels and its kernel taps; ``taps`` compute the input position p0, p1, ...
    of tap (k0, k1, ...) for output (o0, o1, ...), ``skip`` says when it falls outside."""
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
    xs = prog.type(x).shape
    nb, c, insz = xs[0], xs[1], xs[2:]
    oc = prog.type(y).shape[1]
    cg = c // int(node.attrs.get("group", 1))
    odt = prog.type(y).dtype
    ct, st = compute(odt), storage(odt)
    lines = [f"const {storage(prog.type(x).dtype)} *X = {prog.ptr(x)}; const {storage(prog.type(w).dtype)} *W = "
             f"{prog.ptr(w)}; {st} *Y = {prog.ptr(y)};"]
    if b:
        lines.append(f"const {storage(prog.type(b).dtype)} *Bi = {prog.ptr(b)};")
    lines.append(f"for (long n = 0; n < {nb}; n++) for (long m = 0; m < {oc}; m++) {{")
    lines.append(f"    {group_of}")
    lines += counters("o", out, "    ")
    lines += ["    {", f"        {ct} s = 0;", f"        for (long ci = 0; ci < {cg}; ci++)"]
    lines += counters("k", kernel, "        ")
    lines.append("        {")
    lines += ["            " + t for t in taps]
    lines.append(f"            if ({skip}) continue;")
    lines.append(f"            s += ({ct})X[(n * {c} + g * {cg} + ci) * {int(np.prod(insz))} + {row_major('p', insz)}] * "
                 f"({ct})W[({weight_index}) * {int(np.prod(kernel))} + {row_major('k', kernel)}];")
    lines.append("        }")
    bias = f" + ({ct})Bi[m]" if b else ""
    half = "(float)(_Float16)" if odt == np.float16 else ""
    lines.append(f"        Y[(n * {oc} + m) * {int(np.prod(out))} + {row_major('o', out)}] = ({st})({half}(s){bias});")
    lines += ["    }", "}"]
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


def _generic_conv(prog, node) -> str:
    from ...ops.conv import _geometry
    xs, ws_ = prog.type(node.inputs[0]).shape, prog.type(node.inputs[1]).shape
    kernel, strides, dil, begin, end, out = _geometry(node, xs, ws_)
    ocg = ws_[0] // int(node.attrs.get("group", 1))
    taps, skip = window_taps(kernel, strides, dil, begin, xs[2:])
    return _direct(prog, node, kernel, out, taps, skip, f"long g = m / {ocg};", f"m * {ws_[1]} + ci")


def conv(prog, node) -> str:
    geometry = _fast_geometry(prog, node)
    if geometry is not None and is_depthwise(prog, node, geometry):
        return depthwise(prog, node, geometry)
    if geometry is not None and pointwise_ok(prog, node, geometry):
        return pointwise(prog, node, geometry)
    if geometry is not None and winograd_ok(prog, node, geometry):
        return winograd(prog, node, geometry)
    if geometry is not None:
        return _fast_conv(prog, node, geometry)
    return _generic_conv(prog, node)


def conv_transpose(prog, node) -> str:
    """Gather form: output o takes input p where o + begin − k·dilation = p·stride."""
    from ...ops.conv import _tgeometry
    xs, ws_ = prog.type(node.inputs[0]).shape, prog.type(node.inputs[1]).shape
    kernel, strides, dil, opad, full, begin, out = _tgeometry(node, xs, ws_)
    cg, mg = xs[1] // int(node.attrs.get("group", 1)), ws_[1]
    taps, skip = [], []
    for d in range(len(kernel)):
        taps += [f"long q{d} = o{d} + {begin[d]} - k{d} * {dil[d]};", f"long p{d} = q{d} / {strides[d]};"]
        skip.append(f"q{d} < 0 || q{d} % {strides[d]} || p{d} >= {xs[2 + d]}")
    return _direct(prog, node, kernel, out, taps, " || ".join(skip), f"long g = m / {mg}, mo = m % {mg};",
                   f"(g * {cg} + ci) * {mg} + mo")
