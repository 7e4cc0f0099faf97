"""1×1 convolutions between NCHW tensors, with the pixels in the vector lanes.

Y[o, p] = Σ_c W[o, c] · X[c, p] + b[o] over the H·W pixels p of one image: each input
channel's pixels are a contiguous row, loaded as vectors; each weight is broadcast. R output
channels × P vectors of pixels accumulate in registers and are stored as rows of pixels, as
NCHW lays them out. The channels-in-lanes form (conv.py) transposes each block of pixels before
storing an NCHW output, which costs as much as the few multiply-adds of a MobileNet's 16- or
24-channel products.
"""
from __future__ import annotations

import numpy as np

from .elementwise import apply, epilogue_pass, unary_chain
from .emit import after_split, indent, row_blocks


def _block_shape(vw: int) -> tuple[int, int]:
    """(R output channels, P vectors of pixels) a register block holds: R·P accumulators, P
    input vectors and a broadcast weight within the target's vector registers (16 with AVX2 and
    SSE, 32 with AVX-512). Measured on 16→64, 64→16, 24→96, 96→24 and 32→128 products: at 8
    lanes 6 × 2 (16→64 at 32×32: 25.6 µs) against 4 × 3 (35.0 µs) and 8 × 1 (41.9 µs)."""
    return (6, 4) if vw >= 16 else (6, 2)


def pointwise_fits(prog, node, geometry) -> bool:
    """A 1×1, stride-1, unpadded, ungrouped convolution whose image is whole vectors of pixels."""
    xs, ws_, kernel, strides, dil, begin, end, out = geometry
    return (list(kernel) == [1, 1] and list(strides) == [1, 1] and not any(begin) and not any(end)
            and int(node.attrs.get("group", 1)) == 1 and (out[0] * out[1]) % prog.vw == 0)


def pointwise_ok(prog, node, geometry) -> bool:
    """``pointwise_fits``, with its input and output NCHW (not channel-blocked)."""
    return pointwise_fits(prog, node, geometry) and node.inputs[0] not in prog.blocked \
        and node.outputs[0] not in prog.blocked


def _packed(prog, node, oc: int, c: int, r: int) -> tuple[str, str]:
    """The weights as [block][c][R] (R rows of a block side by side, zero rows past the last
    channel) and the bias padded likewise."""
    nblk = -(-oc // r)
    w = np.zeros((nblk * r, c), np.float32)
    w[:oc] = prog.graph.consts[node.inputs[1]].reshape(oc, c)
    bias = np.zeros(nblk * r, np.float32)
    if len(node.inputs) > 2 and node.inputs[2]:
        bias[:oc] = prog.graph.consts[node.inputs[2]].reshape(oc)
    bname = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else node.inputs[1] + "@nobias"
    return (prog.const(node.inputs[1] + f"@pointwise{r}", w.reshape(nblk, r, c).transpose(0, 2, 1)),
            prog.const(bname + f"@pointwisebias{r}", bias))


def _block(p: int, r: int, c: int, hw: int, oc: int, vw: int, chain) -> list[str]:
    """R output channels (block ob) × ``p`` vectors of pixels from px0."""
    acc = [[f"a{j}_{i}" for i in range(p)] for j in range(r)]
    lines = [" ".join(f"vf {acc[j][i]} = vsplat(Bp[ob * {r} + {j}]);" for j in range(r) for i in range(p)),
             f"for (int cc = 0; cc < {c}; cc++) {{",
             f"    const float *xr = xn + cc * {hw} + px0 * {vw}; const float *wr = wb + cc * {r};",
             "    " + " ".join(f"vf x{i} = vload(xr + {i * vw});" for i in range(p))]
    for j in range(r):
        lines.append(f"    {{ vf w = vbcast(wr + {j}); " + " ".join(f"{acc[j][i]} += x{i} * w;" for i in range(p)) + " }")
    lines.append("}")
    for j in range(r):
        stores = " ".join(f"vstore(yr + {i * vw}, {apply(chain, acc[j][i], True)});" for i in range(p))
        guard = f"if (ob * {r} + {j} < {oc}) " if oc % r else ""
        lines.append(f"{guard}{{ float *yr = yn + (ob * {r} + {j}) * {hw} + px0 * {vw}; {stores} }}")
    return lines


def pointwise(prog, node, geometry) -> str:
    xs, ws_, kernel, strides, dil, begin, end, out = geometry
    nb, c = xs[0], xs[1]
    oc, hw, vw = ws_[0], out[0] * out[1], prog.vw
    r, pmax = _block_shape(vw)
    nblk = -(-oc // r)
    wexpr, bexpr = _packed(prog, node, oc, c, r)
    chain = unary_chain(prog, node)
    split = prog.share(nb * oc * hw * c, nblk)
    lines = [f"const float *X = {prog.tensor(node.inputs[0])}; float *Y = {prog.tensor(node.outputs[0])};",
             f"const float *Wp = {wexpr}; const float *Bp = {bexpr};",
             f"for (int n = 0; n < {nb}; n++) {{",
             f"    const float *xn = X + n * {c * hw}; float *yn = Y + n * {oc * hw};"]
    if split:
        lines.append(f"    {split}")
    lines.append(f"    for (int ob = {'lo' if split else 0}; ob < {'hi' if split else nblk}; ob++) {{")
    lines.append(f"        const float *wb = Wp + ob * {c * r};")
    blocks = row_blocks(hw // vw, pmax, lambda p: _block(p, r, c, hw, oc, vw, chain), even=True)
    lines += ["        " + line.replace("ox0", "px0") for line in blocks]
    lines += ["    }", "}"]
    return indent("\n".join(lines)) + "\n" + after_split(prog, epilogue_pass(prog, node, node.outputs[0], in_registers=True))
