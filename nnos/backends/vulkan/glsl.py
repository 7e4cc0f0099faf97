"""The GLSL of each op's step body, with its shapes baked in (kernels.py wraps it in a shader):
``v`` is the output element at coordinates c0..c{r-1} (flat index ``idx``); ``step.at`` and
``step.load`` read a tensor where the plan put it."""
from __future__ import annotations

import numpy as np

from ...errors import BackendError

UNARY = {"Relu": "max(a, 0.0)", "Tanh": "tanh(clamp(a, -15.0, 15.0))", "Sigmoid": "1.0 / (1.0 + exp(-clamp(a, -80.0, 80.0)))",
         "Neg": "-a", "Exp": "exp(a)", "Abs": "abs(a)", "Sqrt": "sqrt(a)", "Identity": "a",
         "Softplus": "log(1.0 + exp(a))", "Erf": "erf_(a)",
         "Gelu": "0.5 * a * (1.0 + erf_(a * 0.70710678118654752))"}
GELU_TANH = "0.5 * a * (1.0 + tanh(clamp(0.7978845608028654 * (a + 0.044715 * a * a * a), -15.0, 15.0)))"
BINARY = {"Add": "a + b", "Sub": "a - b", "Mul": "a * b", "Div": "a / b", "Max": "max(a, b)", "Min": "min(a, b)"}
NEG_INF, POS_INF = "uintBitsToFloat(0xff800000u)", "uintBitsToFloat(0x7f800000u)"


def strides(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def bcast(shape, out_shape) -> list[int]:
    """Strides of ``shape`` broadcast to ``out_shape`` (0 where a dimension is broadcast)."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(shape, out_shape, strides(shape))]


def unary(op: str, attrs: dict) -> str:
    return GELU_TANH if op == "Gelu" and attrs.get("approximate") == "tanh" else UNARY[op]


def clip(graph, attrs: dict, bounds: list) -> str:
    """Clip's expression on ``a``: its bounds from constant inputs (opset ≥ 11) or attributes."""
    lo, hi = attrs.get("min"), attrs.get("max")
    consts = [graph.consts.get(b) if b else None for b in bounds] + [None, None]
    lo = float(consts[0].reshape(())) if consts[0] is not None else lo
    hi = float(consts[1].reshape(())) if consts[1] is not None else hi
    expr = "a"
    if lo is not None:
        expr = f"max({expr}, {float(lo)!r})"
    if hi is not None:
        expr = f"min({expr}, {float(hi)!r})"
    return expr


def conv(step, node) -> str:
    """Direct 2-D convolution (NCHW, any group, stride, dilation, padding): one output element
    per invocation, the bias added, border taps skipped."""
    from ...ops.conv import _geometry
    x, w = node.inputs[0], node.inputs[1]
    xs, ws = step.graph.type_of(x).shape, step.graph.type_of(w).shape
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), _, _ = _geometry(node, xs, ws)
    g = int(node.attrs.get("group", 1))
    cg, mg, (c, h, wd) = ws[1], ws[0] // g, xs[1:]
    taps = step.reduction("r", cg * kh * kw)
    if step.lanes > 1:                  # the lanes share the taps: one flat loop over (ci, u, t)
        body = (f"float acc = 0.0;\n    uint g = c1 / {mg}u;\n"
                f"    {taps} {{\n      uint ci = r / {kh * kw}u, u = (r / {kw}u) % {kh}u, t = r % {kw}u;\n"
                f"      int ih = int(c2 * {sh}u + u * {dh}u) - {ph};\n      int iw = int(c3 * {sw}u + t * {dw}u) - {pw};\n"
                f"      if (ih < 0 || ih >= {h} || iw < 0 || iw >= {wd}) continue;\n"
                f"      acc += {step.at(x, f'((c0 * {c}u + g * {cg}u + ci) * {h}u + uint(ih)) * {wd}u + uint(iw)')}"
                f" * {step.at(w, f'((c1 * {cg}u + ci) * {kh}u + u) * {kw}u + t')};\n    }}\n"
                f"    {step.gathered('acc')}\n    v = acc;")
        return body + (f"\n    v += {step.at(node.inputs[2], 'c1')};" if len(node.inputs) > 2 and node.inputs[2] else "")
    body = (f"float acc = 0.0;\n    uint g = c1 / {mg}u;\n"
            f"    for (uint ci = 0u; ci < {cg}u; ci++) {{\n"
            f"      for (uint u = 0u; u < {kh}u; u++) {{\n"
            f"        int ih = int(c2 * {sh}u + u * {dh}u) - {ph};\n"
            f"        if (ih < 0 || ih >= {h}) continue;\n"
            f"        for (uint t = 0u; t < {kw}u; t++) {{\n"
            f"          int iw = int(c3 * {sw}u + t * {dw}u) - {pw};\n"
            f"          if (iw < 0 || iw >= {wd}) continue;\n"
            f"          acc += {step.at(x, f'((c0 * {c}u + g * {cg}u + ci) * {h}u + uint(ih)) * {wd}u + uint(iw)')}"
            f" * {step.at(w, f'((c1 * {cg}u + ci) * {kh}u + u) * {kw}u + t')};\n"
            f"        }}\n      }}\n    }}\n    v = acc;")
    if len(node.inputs) > 2 and node.inputs[2]:
        body += f"\n    v += {step.at(node.inputs[2], 'c1')};"
    return body


def pool(step, node) -> str:
    """MaxPool, AveragePool (padding excluded from the count unless count_include_pad) and the
    global forms, 2-D NCHW."""
    x = node.inputs[0]
    c, h, wd = step.graph.type_of(x).shape[1:]
    if node.op.startswith("Global"):
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = (h, wd), (1, 1), (1, 1), (0, 0)
    else:
        from ...ops.window import pads_and_out, spatial_attrs
        kh, kw = (int(k) for k in node.attrs["kernel_shape"])
        (sh, sw), (dh, dw) = spatial_attrs(node, 2, [kh, kw])
        (ph, pw), _, _ = pads_and_out(node, [h, wd], [kh, kw], [sh, sw], [dh, dw])
    is_max = "Max" in node.op
    include = int(node.attrs.get("count_include_pad", 0))
    take = "acc = max(acc, x);" if is_max else "acc += x; n += 1.0;"
    body = (f"float acc = {NEG_INF if is_max else '0.0'}; float n = 0.0;\n"
            f"    for (uint u = 0u; u < {kh}u; u++) {{\n      int ih = int(c2 * {sh}u + u * {dh}u) - {ph};\n"
            f"      if (ih < 0 || ih >= {h}) continue;\n"
            f"      for (uint t = 0u; t < {kw}u; t++) {{\n        int iw = int(c3 * {sw}u + t * {dw}u) - {pw};\n"
            f"        if (iw < 0 || iw >= {wd}) continue;\n"
            f"        float x = {step.at(x, f'((c0 * {c}u + c1) * {h}u + uint(ih)) * {wd}u + uint(iw)')};\n"
            f"        {take}\n      }}\n    }}\n")
    if is_max:
        return body + "    v = acc;"
    return body + (f"    v = acc / {float(kh * kw)!r};" if include else "    v = acc / max(n, 1.0);")


def reduce(step, node) -> str:
    """ReduceSum, ReduceMean, ReduceMax, ReduceMin over constant axes: a loop per reduced axis."""
    from ...ops.reduce import _axes
    x = node.inputs[0]
    xs = step.graph.type_of(x).shape
    consts = [step.graph.consts.get(i) if i else None for i in node.inputs]
    axes = _axes(node, [step.graph.type_of(i) if i else None for i in node.inputs], consts) or ()
    keep = int(node.attrs.get("keepdims", 1))
    st, out_d, loops, index = strides(xs), 0, [], []
    for d in range(len(xs)):
        if d in axes:
            loops.append(f"for (uint r{d} = 0u; r{d} < {xs[d]}u; r{d}++)")
            index.append(f"r{d} * {st[d]}u")
            out_d += keep
        else:
            index.append(f"c{out_d} * {st[d]}u")
            out_d += 1
    op = node.op[len("Reduce"):]
    init = {"Sum": "0.0", "Mean": "0.0", "Max": NEG_INF, "Min": POS_INF}[op]
    take = {"Sum": "acc += x;", "Mean": "acc += x;", "Max": "acc = max(acc, x);", "Min": "acc = min(acc, x);"}[op]
    count = int(np.prod([xs[a] for a in axes])) if axes else 1
    body = f"float acc = {init};\n    " + " ".join(loops) + f" {{ float x = {step.at(x, ' + '.join(index) or '0u')}; {take} }}\n"
    return body + (f"    v = acc / {float(count)!r};" if op == "Mean" else "    v = acc;")


def concat(step, node) -> str:
    axis = int(node.attrs.get("axis", 0)) % len(step.shape)
    lines, start = [], 0
    for i, name in enumerate(node.inputs):
        ish = step.graph.type_of(name).shape
        st = strides(ish)
        idx = " + ".join(f"{'(c%d - %du)' % (d, start) if d == axis else 'c%d' % d} * {st[d]}u" for d in range(len(ish)))
        cond = f"c{axis} < {start + ish[axis]}u"
        lines.append(f"{'if' if i == 0 else 'else if'} ({cond}) v = {step.at(name, idx)};")
        start += ish[axis]
    return "v = 0.0;\n    " + "\n    ".join(lines)


def transpose(step, node) -> str:
    xs = step.graph.type_of(node.inputs[0]).shape
    perm = node.attrs.get("perm") or list(reversed(range(len(xs))))
    st = strides(xs)
    return f"v = {step.at(node.inputs[0], ' + '.join(f'c{o} * {st[p]}u' for o, p in enumerate(perm)) or '0u')};"


def softmax(step, node) -> str:
    """Softmax over one axis (opset ≥ 13): each element recomputes its row's max and sum."""
    axis = int(node.attrs.get("axis", -1)) % len(step.shape)
    st, n = strides(step.shape), step.shape[axis]
    x = node.inputs[0]
    base = " + ".join(f"c{d} * {st[d]}u" for d in range(len(step.shape)) if d != axis) or "0u"
    row = f"({base}) + r * {st[axis]}u"
    return (f"float m = {NEG_INF};\n"
            f"    for (uint r = 0u; r < {n}u; r++) {{ m = max(m, {step.at(x, row)}); }}\n"
            f"    float s = 0.0;\n    for (uint r = 0u; r < {n}u; r++) {{ s += exp({step.at(x, row)} - m); }}\n"
            f"    v = exp({step.at(x, 'idx')} - m) / s;")


def batched_matmul(step, node) -> str:
    """MatMul over (…, M, K) × (…, K, N), the batch dimensions broadcast as numpy does."""
    a, b = node.inputs
    sa, sb = step.graph.type_of(a).shape, step.graph.type_of(b).shape
    r, k = len(step.shape), sa[-1]
    batch = step.shape[:-2]

    def base(shape):
        st = bcast(tuple(shape[:-2]), batch) if len(shape) > 2 else [0] * len(batch)
        plane = shape[-2] * shape[-1]
        return " + ".join([f"c{d} * {s * plane}u" for d, s in enumerate(st) if s] or ["0u"])
    ai = f"{base(sa)} + c{r - 2} * {k}u + kk"
    bi = f"{base(sb)} + kk * {sb[-1]}u + c{r - 1}"
    return (f"float acc = 0.0;\n    {step.reduction('kk', k)} {{ acc += {step.at(a, ai)} * {step.at(b, bi)}; }}\n"
            f"    {step.gathered('acc')}\n    v = acc;")


def layernorm(step, node) -> str:
    """LayerNormalization over the dimensions from ``axis``: each element recomputes its row's
    mean and variance (rows are short in policies; no shared memory needed)."""
    axis = int(node.attrs.get("axis", -1)) % len(step.shape)
    eps = float(node.attrs.get("epsilon", 1e-5))
    n = int(np.prod(step.shape[axis:]))
    x = node.inputs[0]
    inner = " + ".join(f"c{d} * {st}u" for d, st in zip(range(axis, len(step.shape)), strides(step.shape[axis:])))
    row = f"(idx - ({inner}))"
    body = (f"uint r0 = {row};\n    float m = 0.0;\n"
            f"    for (uint r = 0u; r < {n}u; r++) {{ m += {step.at(x, 'r0 + r')}; }}\n    m /= {float(n)!r};\n"
            f"    float q = 0.0;\n    for (uint r = 0u; r < {n}u; r++) {{ float d = {step.at(x, 'r0 + r')} - m; q += d * d; }}\n"
            f"    v = ({step.at(x, 'idx')} - m) * inversesqrt(q / {float(n)!r} + {eps!r});\n"
            f"    v *= {step.load(node.inputs[1])};")
    if len(node.inputs) > 2 and node.inputs[2]:
        body += f"\n    v += {step.load(node.inputs[2])};"
    return body


def gather(step, node) -> str:
    """Gather with constant indices (an exported embedding's positions): baked into the shader."""
    x, idx = node.inputs
    xs = step.graph.type_of(x).shape
    axis = int(node.attrs.get("axis", 0)) % len(xs)
    ind = np.asarray(step.graph.consts[idx]).reshape(-1) % xs[axis]
    ishape = step.graph.type_of(idx).shape
    table = step.dialect.table("picks", [int(i) for i in ind]) + "\n    " if ind.size > 1 else ""
    flat = " + ".join(f"c{axis + d} * {st}u" for d, st in enumerate(strides(ishape))) or "0u"
    pick = f"picks[{flat}]" if table else f"{int(ind[0]) if ind.size else 0}u"
    st = strides(xs)
    terms = [f"c{d} * {st[d]}u" for d in range(axis)] + [f"({pick}) * {st[axis]}u"]
    terms += [f"c{d + len(ishape) - 1} * {st[d]}u" for d in range(axis + 1, len(xs))]
    return f"{table}v = {step.at(x, ' + '.join(terms))};"


def gemm(step, node) -> str:
    a, b = node.inputs[0], node.inputs[1]
    ta, tb = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    sa, sb = step.graph.type_of(a).shape, step.graph.type_of(b).shape
    if len(sa) != 2 or len(sb) != 2:
        raise BackendError(f"{node.name}: only 2-D products (got {list(sa)} × {list(sb)})")
    k = sa[0] if ta else sa[1]
    ai = f"k * {sa[1]}u + c0" if ta else f"c0 * {sa[1]}u + k"
    bi = f"c1 * {sb[1]}u + k" if tb else f"k * {sb[1]}u + c1"
    body = (f"float acc = 0.0;\n    {step.reduction('k', k)} {{ acc += {step.at(a, ai)} * {step.at(b, bi)}; }}\n"
            f"    {step.gathered('acc')}\n    v = {alpha!r} * acc;")
    if len(node.inputs) > 2 and node.inputs[2]:
        body += f"\n    v += {beta!r} * {step.load(node.inputs[2])};"
    return body
