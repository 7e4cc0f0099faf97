"""Quantized steps: QuantizeLinear and DequantizeLinear (one loop over the tensor, its scale and
zero point read per element or per channel), and the integer products. A QuantizeLinear by one
scale and zero point is a vector loop (qstore.py's store); an integer product's DequantizeLinear
(or Cast) and its chain run by channel rows, storing the next QuantizeLinear's bytes.

MatMulInteger and ConvInteger with a constant 8-bit weight whose centred values (W − zero
point) fit int8 — every weight onnxruntime's quantizer writes — have three forms in the source,
the target's chosen by the preprocessor (qkernels.py has the kernels): AVX-512 VNNI (a row of A,
or sixteen pixels' windows, against the packed weight; the activation made unsigned by flipping
its sign bit, the flip and the zero point corrected by the weight's sums), AVX2 (centred int16
pairs), and generic int32 loops that gcc vectorizes where it can. A depthwise ConvInteger at
stride 1 or 2 with a constant weight sums in floats, exactly, and may run the DequantizeLinear
chain after it too (qdepthwise.py). Any other MatMulInteger (computed operands, per-row zero
points) and any other grouped ConvInteger run the generic loops only.
"""
from __future__ import annotations

import numpy as np

from ...ops.conv import _geometry
from ...ops.lookup import LOOKUP
from ...ops.quant import FAKE_QUANT, QUANT, compute_dtype
from .ctype import storage
from .elementwise import (VECTOR_BINARY, elementwise, epilogue_pass, generic_code, lookup_cut, vector_code, vector_expr,
                          vector_loop, vector_ok)
from .emit import Unsupported, indent
from .gemm import batched
from .loops import nest
from .prelude import activation
from .qkernels import AVX2_HELPER, VNNI_HELPER, pack_pairs, pack_vnni
from .qdepthwise import depthwise_conv
from .qlookup import after_pass
from .qpack import Form, avx2_pointwise, vnni_pointwise, windowed
from .qstore import HELPER as QSTORE_HELPER
from .reduce import range_after


# bytes: an int8 product's rows copied as unsigned bytes all at once up to this (in L2), else four at
# a time (_vnni_rows)
WHOLE_COPY = 1 << 18

# --- QuantizeLinear / DequantizeLinear -----------------------------------------------------------

def _param_strides(prog, node, name: str, shape: tuple) -> tuple:
    """Per-element strides of a scale or zero point: 0 everywhere for one value, else 1 along
    the node's axis (one value per index of it)."""
    if prog.type(name).size == 1:
        return (0,) * len(shape)
    axis = int(node.attrs.get("axis", 1)) % len(shape)
    return tuple(1 if d == axis else 0 for d in range(len(shape)))


def quantize_linear(prog, node) -> str:
    fast = _vector_quantize(prog, node) or _vector_dequantize(prog, node)
    if fast is not None:
        return fast
    x, out = node.inputs[0], node.outputs[0]
    shape = prog.type(x).shape
    ins = list(node.inputs) + [""] * (3 - len(node.inputs))
    strides = {n: _param_strides(prog, node, n, shape) for n in ins[1:] if n}
    attrs = dict(node.attrs)
    if node.op == "QuantizeLinear":
        attrs["compute"] = compute_dtype(prog.type(x).dtype, prog.type(ins[1]).dtype).name
    links = [(e.op, e.inputs_with("@v"), e.attrs) for e in node.epilogue]
    return generic_code(prog, out, [(node.op, ins, attrs)] + links, strides)      # the chain in the same loop


def vector_quantizable(prog, node) -> bool:
    """A QuantizeLinear of float32 by one float32 scale (and one zero point of the output's
    type, or none) to 8 bits, nothing fused after it."""
    x, out = node.inputs[0], node.outputs[0]
    scale = node.inputs[1] if len(node.inputs) > 1 else ""
    zero = node.inputs[2] if len(node.inputs) > 2 else ""
    dt = np.dtype(prog.type(out).dtype)
    return not (node.op != "QuantizeLinear" or node.epilogue or not scale
                or dt not in (np.dtype(np.uint8), np.dtype(np.int8)) or prog.type(x).dtype != np.float32
                or prog.type(scale).dtype != np.float32 or prog.type(scale).size != 1
                or (zero and (prog.type(zero).size != 1 or np.dtype(prog.type(zero).dtype) != dt)))


def _vector_quantize(prog, node) -> str | None:
    """A QuantizeLinear of float32 by one scale and zero point to 8 bits — constants, or values
    computed in the step before (a dynamically quantized model's) — whole vectors quantized in
    registers (qstore.py's vquant_store, the scalar loop's values exactly). The scalar loop's
    rintf and byte store kept gcc to a few lanes at a time: 16 384 values took 1.8 µs, three
    times the dequantizing step before it (int8 cnn_s on AVX-512)."""
    if not vector_quantizable(prog, node):
        return None
    x, out, scale = node.inputs[0], node.outputs[0], node.inputs[1]
    zero = node.inputs[2] if len(node.inputs) > 2 else ""
    lo, hi = QUANT[np.dtype(prog.type(out).dtype)]
    if QSTORE_HELPER not in prog.helpers:
        prog.helpers.append(QSTORE_HELPER)
    n = prog.type(x).size
    z = f"(float){prog.ptr(zero)}[0]" if zero else "0.0f"
    store = "vquant_store(y + i, {v}, s_, lo_, hi_, z_, {n});"
    return "\n".join([
        f"{{ const float *x = {prog.ptr(x)}; uint8_t *y = (uint8_t *){prog.ptr(out)}; long i = 0;",
        f"    const float s_ = {prog.ptr(scale)}[0], z_ = {z}, lo_ = {float(lo)!r}f - z_, hi_ = {float(hi)!r}f - z_;",
        f"    for (; i + VW <= {n}; i += VW) {store.format(v='vload(x + i)', n='VW')}",
        f"    if (i < {n}) {{ float t[VW] = {{0}}; memcpy(t, x + i, ({n} - i) * sizeof *t); "
        f"{store.format(v='vload(t)', n=f'{n} - i')} }}",
        "}"])


def _operand_kind(prog, name: str, shape: tuple) -> str | None:
    """How a dequantizing chain reads ``name`` over an output of ``shape`` (N, C, …): "one"
    value, one per "channel" (axis 1), one "row" (the same for every N and C: a bias along a
    product's last axis), "full" (the output's shape), or None."""
    t = prog.type(name)
    if t.dtype != np.float32 or len(t.shape) > len(shape):
        return None
    if t.size == 1:
        return "one"
    if tuple(t.shape) == tuple(shape):
        return "full"
    dims = (1,) * (len(shape) - len(t.shape)) + tuple(t.shape)
    if dims[1] == shape[1] and t.size == shape[1] and name in prog.graph.consts:
        return "channel"
    if dims[:2] == (1, 1) and dims[2:] == tuple(shape[2:]):
        return "row"
    return None


def _dequantize_scale(prog, node, shape: tuple) -> dict | None:
    zero = node.inputs[2] if len(node.inputs) > 2 else ""
    if zero and not (zero in prog.graph.consts and not prog.graph.consts[zero].any()):
        return None
    scale = node.inputs[1]
    if prog.type(scale).size == 1:
        return {scale: _operand_kind(prog, scale, shape)}
    axis, size = int(node.attrs.get("axis", 1)) % len(shape), prog.type(scale).size
    if scale not in prog.graph.consts or prog.type(scale).dtype != np.float32:
        return None
    if axis == 1 and size == shape[1]:
        return {scale: "channel"}
    if axis == 2 == len(shape) - 1 and size == shape[2]:       # a MatMul's per-column scales: along each row
        return {scale: "row"}
    return None


def _dequantize_operands(prog, node, shape: tuple, chain: list) -> dict | None:
    """The kinds of a DequantizeLinear's scale and its chain's operands, or None when one is not
    a kind the channel-row form reads (or the zero point is not a constant 0); ``chain``: the
    links of the node's epilogue this loop applies."""
    kinds = {} if node.op == "Cast" else _dequantize_scale(prog, node, shape)
    if kinds is None:
        return None
    for e in chain:
        if not (e.op in VECTOR_BINARY or activation(e.op, e.attrs) or e.op in ("Clip", "LeakyRelu", FAKE_QUANT)):
            return None
        if e.op == FAKE_QUANT:                         # its scale and zero point: literals (elementwise.py)
            if not all(a in prog.graph.consts and prog.type(a).size == 1 for a in e.operands):
                return None
            continue
        for a in e.operands:
            if a:
                kinds[a] = _operand_kind(prog, a, shape)
    return None if None in kinds.values() else kinds


def _vector_dequantize(prog, node) -> str | None:
    """A DequantizeLinear (or a dynamically quantized model's Cast) of an integer product's
    int32 sums and its chain (the bias, a ReLU, a rounding, a residual) over one channel's row
    at a time, a vector at once; stored as a later step's QuantizeLinear's bytes when that is
    the float tensor's only reader (qstore.py). The generic loop stored floats that the
    QuantizeLinear read back: int8 cnn_s's first layer spent 0.55 + 0.8 µs there. Each
    product is rounded before the next add, as the reference's (vkeep). From a lookup on (a
    QDQ model's GELU), the chain is a second pass over the floats, as in the generic form: in
    this loop its gathers took 6.4 µs of int8 act_s's first feed-forward, that pass 4.9."""
    x, out = node.inputs[0], node.outputs[0]
    ot = prog.type(out)
    shape = tuple(ot.shape)
    if node.op not in ("DequantizeLinear", "Cast") or prog.type(x).dtype != np.int32 or ot.dtype != np.float32 \
            or len(shape) < 3:
        return None
    rows = int(np.prod(shape[2:]))
    links = [(e.op, e.inputs_with("@v"), e.attrs) for e in node.epilogue]
    cut = lookup_cut(prog, links, first=0)
    cut = len(links) if cut is None else cut
    kinds = _dequantize_operands(prog, node, shape, node.epilogue[:cut])
    if kinds is None or rows < prog.vw or (cut < len(links) and not vector_ok(prog, links[cut:], out)):
        return None
    names = {a: f"p{k}" for k, a in enumerate(kinds)}

    def operand(a, vector):
        p, kind = names[a], kinds[a]
        if kind in ("full", "row"):
            at = "o + i" if kind == "full" else "i"
            return f"vload({p} + {at})" if vector else f"{p}[{at}]"
        at = "0" if kind == "one" else f"ch % {shape[1]}"
        return f"vsplat({p}[{at}])" if vector else f"{p}[{at}]"

    vec = ["vf v = __builtin_convertvector(({ vi t_; memcpy(&t_, X + o + i, sizeof t_); t_; }), vf);"]
    sca = ["float v = (float)X[o + i];"]
    if node.op == "DequantizeLinear":
        vec.append(f"v = vkeep(v * {operand(node.inputs[1], True)});")
        sca.append(f"v = skeep(v * {operand(node.inputs[1], False)});")
    gelu = None
    for op, args, attrs in links[:cut]:
        keep = ("vkeep", "skeep") if op == "Mul" else ("", "")
        if gelu is None and activation(op, attrs) == "Gelu":
            gelu = len(vec)                         # split by vector_loop
        vec.append(f"v = {keep[0]}({vector_expr(prog, op, args, ot.size, True, attrs, operand)});")
        sca.append(f"v = {keep[1]}({vector_expr(prog, op, args, ot.size, False, attrs, operand)});")
    q = prog.quantized_store(out) if cut == len(links) else None
    if q is None:
        vstore, sstore = "vstore(O + o + i, v);", "O[o + i] = v;"
        dst = f"float *O = {prog.ptr(out)};"
    else:
        vstore, sstore = q.store("Q + o + i", "v", "VW"), q.store("Q + o + i", "vsplat(v)", 1)
        dst = f"uint8_t *Q = (uint8_t *){prog.ptr(q.out)};"
    decl = " ".join(f"const float *{names[a]} = {prog.ptr(a)};" for a in kinds)
    rng = range_after(prog, out) if cut == len(links) else None      # a dynamic quantization's range
    if rng is not None:
        decl, vstore, sstore = f"{decl} {rng.decl()}", f"{rng.vector('v')} {vstore}", f"{rng.scalar('v')} {sstore}"
    first = "\n".join([
        f"{{ const int32_t *X = {prog.ptr(x)}; {dst} {decl}",
        f"    for (long ch = 0; ch < {shape[0] * shape[1]}; ch++) {{",
        f"        const long o = ch * {rows}; long i = 0;",
        *(" " * 8 + line for line in vector_loop(rows, vec, vstore, gelu)),
        f"        for (; i < {rows}; i++) {{ {' '.join(sca)} {sstore} }}",
        "    }", *([rng.finish()] if rng is not None else []), "}"])
    if cut == len(links):
        return first
    return first + "\n" + (after_pass(prog, out, links[cut:]) or vector_code(prog, out, links[cut:]))


def cast(prog, node) -> str:
    """Cast: an integer product's sums to float32 in the channel-row form, else elementwise."""
    fast = _vector_dequantize(prog, node)
    return fast if fast is not None else elementwise(prog, node)


# --- MatMulInteger -----------------------------------------------------------------------------
def _zero(prog, name: str, index: str) -> str:
    """A zero point's value at ``index`` (one value: index 0), as int32; "0" when absent."""
    if not name:
        return "0"
    return f"(int32_t){prog.ptr(name)}[{index if prog.type(name).size != 1 else '0'}]"


def _centred_weight(prog, node) -> np.ndarray | None:
    """B − its zero point, when B and the zero point are constants (int32)."""
    b = node.inputs[1]
    zb = node.inputs[3] if len(node.inputs) > 3 else ""
    g = prog.graph
    if b not in g.consts or (zb and zb not in g.consts):
        return None
    w = g.consts[b].astype(np.int32)
    return w - (g.consts[zb].astype(np.int32).reshape(-1) if zb else 0)


def _vnni_rows(prog, node, w: np.ndarray, m: int, k: int, n: int) -> str:
    """Each row of A as unsigned bytes — int8 rows flipped into a copy, uint8 rows copied when K
    is not a multiple of four, else read in place — on the VNNI row kernel; with one zero point
    for every row, four rows a call (nnos_qrows4_vnni: independent sums — one row's were a
    chain of dependent vpdpbusd when the columns are few)."""
    a, o = node.inputs[0], node.outputs[0]
    za = node.inputs[2] if len(node.inputs) > 2 else ""
    packed, colsum = pack_vnni(w.astype(np.int8))
    kq = -(-k // 4)
    flip = prog.type(a).dtype == np.int8             # int8 activations: + 128 makes them unsigned
    fours = m // 4 * 4 if not za or prog.type(za).size == 1 else 0
    add_helpers(prog)
    wk, cs = prog.const(o + ':vnni', packed, np.int8), prog.const(o + ':colsum', colsum, np.int32)

    def copy(r: str) -> str:
        dst = f"R + ({r}) * {kq * 4}"
        if flip:
            return f"for (long p = 0; p < {k}; p++) ({dst})[p] = (uint8_t)(A[(i + {r}) * {k} + p] ^ 0x80);"
        return f"memcpy({dst}, A + (i + {r}) * {k}, {k});"
    off = f"{128 if flip else 0} + {_zero(prog, za, 'i')}"
    direct = not flip and k % 4 == 0                  # unsigned rows of whole groups of four: read in place
    lines = [f"const {storage(prog.type(a).dtype)} *A = {prog.ptr(a)}; int32_t *Y = {prog.ptr(o)};", "long i = 0;"]
    src, lda = ("(const uint8_t *)A + i * " + str(k), k) if direct else ("R", kq * 4)
    if not direct and m * kq * 4 <= WHOLE_COPY:
        lines += _copied_rows(prog, m, k, kq, flip)
        src, direct = f"R + i * {kq * 4}", True
    elif not direct:
        rows, _ = prog.ws(4 * kq * 4, "uint8_t")
        lines.insert(1, f"uint8_t *R = {rows}; memset(R, {128 if flip else 0}, {4 * kq * 4});")
    if fours:
        lines += [f"for (; i < {fours}; i += 4) {{",
                  *(["    " + " ".join(copy(str(r)) for r in range(4))] if not direct else []),
                  f"    nnos_qrows4_vnni({src}, {lda}, {wk}, {cs}, {off}, Y + i * {n}, {n}, {kq}, {n});", "}"]
    lines += [f"for (; i < {m}; i++) {{", *([f"    {copy('0')}"] if not direct else []),
              f"    nnos_qrow_vnni({src}, {wk}, {cs}, {off}, Y + i * {n}, {kq}, {n});", "}"]
    return "\n".join(lines)


def _copied_rows(prog, m: int, k: int, kq: int, flip: bool) -> list[str]:
    """All of A's rows as unsigned bytes in a copy (R, rows of 4·kq) before the first product:
    each group's copy right before its kernel (now inlined) had the kernel's word loads wait on
    the copy's byte stores (act_s qdq_s8's 65 × 32 × 128 product: 1.05 → 1.72 µs)."""
    rows, _ = prog.ws(m * kq * 4, "uint8_t")
    value = "A[p] ^ 0x80" if flip else "A[p]"
    if k == kq * 4:
        return [f"uint8_t *R = {rows};", f"for (long p = 0; p < {m * k}; p++) R[p] = (uint8_t)({value});"]
    return [f"uint8_t *R = {rows}; memset(R, {128 if flip else 0}, {m * kq * 4});",
            f"for (long r = 0; r < {m}; r++) for (long p = 0; p < {k}; p++) "
            f"R[r * {kq * 4} + p] = (uint8_t)({value.replace('[p]', f'[r * {k} + p]')});"]


def _by_target(vnni: str, avx2: str, generic: str) -> str:
    """The three forms of a step, the target's chosen when the plan is compiled."""
    return f"#if defined(NNOS_HAVE_VNNI)\n{vnni}\n#elif defined(NNOS_HAVE_AVX2_INT)\n{avx2}\n#else\n{generic}\n#endif"


def add_helpers(prog) -> None:
    for h in (VNNI_HELPER, AVX2_HELPER):
        if h not in prog.helpers:
            prog.helpers.append(h)


def _avx2_rows(prog, node, w: np.ndarray, m: int, k: int, n: int) -> str:
    """Each row of A centred into int16, times the [K, N] weight packed in pairs."""
    a, o = node.inputs[0], node.outputs[0]
    za = node.inputs[2] if len(node.inputs) > 2 else ""
    kp = -(-k // 2)
    row, _ = prog.ws(kp * 4, "int16_t")
    add_helpers(prog)
    return "\n".join([
        f"const {storage(prog.type(a).dtype)} *A = {prog.ptr(a)}; int32_t *Y = {prog.ptr(o)}; int16_t *R = {row};",
        f"R[{2 * kp - 1}] = 0; const int32_t za = {_zero(prog, za, '0')};",
        f"for (long i = 0; i < {m}; i++) {{",
        f"    for (long p = 0; p < {k}; p++) R[p] = (int16_t)((int32_t)A[i * {k} + p] - za);",
        f"    nnos_qrow_avx2(R, {prog.const(o + ':pairs', pack_pairs(w), np.int16)}, Y + i * {n}, {kp}, {n});",
        "}"])


def _generic_rows(prog, node, m: int, k: int, n: int, w: np.ndarray | None, a_off: str, b_off: str, o_off: str) -> str:
    """One batch entry: int32 rows accumulated in the output, zero points subtracted as read."""
    a, b, o = node.inputs[0], node.inputs[1], node.outputs[0]
    za = node.inputs[2] if len(node.inputs) > 2 else ""
    zb = node.inputs[3] if len(node.inputs) > 3 else ""
    if w is not None:
        bexpr = f"(int32_t)Bc[p * {n} + j]"
        bdecl = f"const int16_t *Bc = {prog.const(b + ':centred', w, np.int16)} + {b_off};"
    else:
        bexpr = f"((int32_t)Bb[p * {n} + j] - {_zero(prog, zb, 'j')})"
        bdecl = f"const {storage(prog.type(b).dtype)} *Bb = {prog.ptr(b)} + {b_off};"
    return "\n".join([
        f"const {storage(prog.type(a).dtype)} *Ab = {prog.ptr(a)} + {a_off}; {bdecl} int32_t *Ob = {prog.ptr(o)} + {o_off};",
        f"for (long i = 0; i < {m}; i++) {{",
        f"    int32_t *orow = Ob + i * {n};",
        f"    for (long j = 0; j < {n}; j++) orow[j] = 0;",
        f"    for (long p = 0; p < {k}; p++) {{",
        f"        const int32_t av = (int32_t)Ab[i * {k} + p] - {_zero(prog, za, 'i')};",
        f"        for (long j = 0; j < {n}; j++) orow[j] += av * {bexpr};",
        "    }", "}"])


def matmul_integer(prog, node) -> str:
    a, o = node.inputs[0], node.outputs[0]
    m, k, n, batch, strides = batched(prog, node)
    w = _centred_weight(prog, node)
    if w is not None and w.ndim == 2 and w.min() >= -128 and w.max() <= 127:
        rows = prog.type(a).size // k                         # a constant 2-D weight: every row of A alike
        za = node.inputs[2] if len(node.inputs) > 2 else ""
        if not za or prog.type(za).size == 1:
            code = _by_target(_vnni_rows(prog, node, w, rows, k, n), _avx2_rows(prog, node, w, rows, k, n),
                              _generic_rows(prog, node, rows, k, n, w, "0", "0", "0"))
            return indent(code) + "\n" + epilogue_pass(prog, node, o)
    code = nest(batch, strides, lambda idx: _generic_rows(prog, node, m, k, n, w, idx[1], idx[2], idx[0]), var="b")
    return indent(code) + "\n" + epilogue_pass(prog, node, o)


# --- ConvInteger ---------------------------------------------------------------------------------
def conv_integer(prog, node) -> str:
    x, w, o = node.inputs[0], node.inputs[1], node.outputs[0]
    xs, ws = prog.type(x).shape, prog.type(w).shape
    if len(xs) != 4:
        raise Unsupported(f"ConvInteger over {len(xs) - 2} spatial dims (the generated form is 2-D)")
    kernel, strides, dil, begin, _, out = _geometry(node, xs, ws)
    g = int(node.attrs.get("group", 1))
    geometry = (*xs, *kernel, strides, dil, begin, out)
    wc = centred_conv_weight(prog, node)
    if wc is not None and g == 1:                       # the zero point of X is one value (ops/quant.py)
        add_helpers(prog)
        code = _by_target(_vnni_conv(prog, node, wc, geometry), _avx2_conv(prog, node, wc, geometry),
                          _direct_conv(prog, node, geometry, g))
    else:
        zx = _zero(prog, node.inputs[2] if len(node.inputs) > 2 else "", "0")
        code = depthwise_conv(prog, node, geometry, g, zx, _chain_after(prog, o)) or _direct_conv(prog, node, geometry, g)
    return indent(code) + "\n" + epilogue_pass(prog, node, o)


def _chain_after(prog, name: str):
    """The DequantizeLinear after ConvInteger output ``name`` that the depthwise form may run too
    (qdepthwise.choose; its scale and its chain's operands one value or one per channel, no
    lookup): (its node, the C declarations of those operands, a sum's expression → the value
    the DequantizeLinear's chain makes of it, each product rounded before the next add as the
    reference's: vkeep); None when there is none."""
    d = prog.step_after(name)
    if d is None or any(e.op == LOOKUP for e in d.epilogue):
        return None
    shape = tuple(prog.type(d.outputs[0]).shape)
    kinds = _dequantize_operands(prog, d, shape, d.epilogue)
    if kinds is None or any(k not in ("one", "channel") for k in kinds.values()):
        return None
    names = {a: f"p{k}" for k, a in enumerate(kinds)}

    def operand(a, vector):
        return f"vsplat({names[a]}[{'0' if kinds[a] == 'one' else f'bc % {shape[1]}'}])"
    steps = [f"v = vkeep(v * {operand(d.inputs[1], True)});"]
    for e in d.epilogue:
        expr = vector_expr(prog, e.op, e.inputs_with("@v"), prog.type(d.outputs[0]).size, True, e.attrs, operand)
        steps.append(f"v = {'vkeep' if e.op == 'Mul' else ''}({expr});")
    decls = " ".join(f"const float *{names[a]} = {prog.ptr(a)};" for a in kinds)
    return d, decls, lambda a: f"({{ vf v = {a}; {' '.join(steps)} v; }})"


def centred_conv_weight(prog, node) -> np.ndarray | None:
    """W − its zero point (one per output channel or one), when constants whose values fit int8."""
    w, zw = node.inputs[1], node.inputs[3] if len(node.inputs) > 3 else ""
    g = prog.graph
    if w not in g.consts or (zw and zw not in g.consts):
        return None
    wc = g.consts[w].astype(np.int32)
    if zw:
        wc = wc - g.consts[zw].astype(np.int32).reshape((-1,) + (1,) * (wc.ndim - 1))
    return wc if wc.min() >= -128 and wc.max() <= 127 else None


def _vnni_conv(prog, node, wc: np.ndarray, geometry) -> str:
    """Unsigned bytes (the zero point in the border and the extra channels; int8 inputs
    flipped), groups of sixteen pixels, a tile of groups a call, on the VNNI kernel
    (qpack._groups); the zero point and the flip corrected by each output channel's weight sum."""
    x, zx = node.inputs[0], node.inputs[2] if len(node.inputs) > 2 else ""
    flip = prog.type(x).dtype == np.int8
    rowsum = prog.const(node.outputs[0] + ":rowsum", wc.reshape(wc.shape[0], -1).sum(axis=1), np.int32)
    return windowed(prog, node, wc, geometry, Form(
        "uint8_t", 4, 16, np.int8, f"const int32_t off = {128 if flip else 0} + {_zero(prog, zx, '0')};", "off",
        lambda v: f"(uint8_t)({v}{' ^ 0x80' if flip else ''})",
        lambda xt, c, npx, **kw: vnni_pointwise(xt, flip, c, npx, **kw),
        lambda wk, y, npx, kq, mo: f"nnos_qconv16_vnni_rows(CA, tn, {wk}, {rowsum}, off, {y}, {npx}, {kq}, {mo}, mk);",
        lambda wk, y, hp, wq, s, words, kh, kw, oh, ow, mo:
            f"nnos_qconv16_vnni_direct(P, {hp}, {wq}, {s}, {words}, {kh}, {kw}, {wk}, {rowsum}, off, {y}, {oh}, {ow}, {mo});"))


def _avx2_conv(prog, node, wc: np.ndarray, geometry) -> str:
    """Centred int16 values (0 in the border and the extra channel), eight pixels at a time on
    the vpmaddwd kernel."""
    zx = node.inputs[2] if len(node.inputs) > 2 else ""
    return windowed(prog, node, wc, geometry, Form(
        "int16_t", 2, 8, np.int16, f"const int32_t zx = {_zero(prog, zx, '0')};", "0",
        lambda v: f"(int16_t)((int32_t){v} - zx)",
        avx2_pointwise,
        lambda wk, y, npx, kq, mo: f"nnos_qconv8_avx2_rows(CA, tn, {wk}, {y}, {npx}, {kq}, {mo}, mk);"))


def _direct_conv(prog, node, geometry, g: int) -> str:
    n, c, h, wd, kh, kw, strides, dil, begin, out = geometry
    x, w, o = node.inputs[0], node.inputs[1], node.outputs[0]
    zx = node.inputs[2] if len(node.inputs) > 2 else ""
    zw = node.inputs[3] if len(node.inputs) > 3 else ""
    ws, ys = prog.type(w).shape, prog.type(o).shape
    mo, cg = ws[0], ws[1]
    mg = mo // g
    return f"""const {storage(prog.type(x).dtype)} *X = {prog.ptr(x)}; const {storage(prog.type(w).dtype)} *W = {prog.ptr(w)};
int32_t *Y = {prog.ptr(o)}; const int32_t zx = {_zero(prog, zx, '0')};
for (long b = 0; b < {n}; b++) for (long oc = 0; oc < {mo}; oc++) {{
    const long grp = oc / {mg}; const int32_t zw = {_zero(prog, zw, 'oc')};
    for (long oy = 0; oy < {out[0]}; oy++) for (long ox = 0; ox < {out[1]}; ox++) {{
        int32_t acc = 0;
        for (long ic = 0; ic < {cg}; ic++) for (long ky = 0; ky < {kh}; ky++) {{
            const long iy = oy * {strides[0]} + ky * {dil[0]} - {begin[0]};
            if (iy < 0 || iy >= {h}) continue;
            for (long kx = 0; kx < {kw}; kx++) {{
                const long ix = ox * {strides[1]} + kx * {dil[1]} - {begin[1]};
                if (ix < 0 || ix >= {wd}) continue;
                acc += ((int32_t)X[((b * {c} + grp * {cg} + ic) * {h} + iy) * {wd} + ix] - zx) *
                       ((int32_t)W[((oc * {cg} + ic) * {kh} + ky) * {kw} + kx] - zw);
            }}
        }}
        Y[((b * {mo} + oc) * {ys[2]} + oy) * {ys[3]} + ox] = acc;
    }}
}}"""

