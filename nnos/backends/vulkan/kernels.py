"""Each step of a plan as a GLSL compute shader with its shapes and offsets baked in, compiled to
SPIR-V by glslang (Debian's glslang-tools). The code is generated here from the plan, never
taken from anywhere else. Two storage buffers per shader: the arena (binding 0) and the weights
(binding 1), float32 words; one invocation per output element.

What is covered: Gemm, 2-D MatMul, elementwise ops with numpy broadcasting, copies (Reshape,
Flatten, Squeeze, Unsqueeze, Identity when not a view), and every fused epilogue of those.
``unsupported(plan)`` names the first step outside that, so the backend can be passed over.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile

import numpy as np

from ...errors import BackendError

LOCAL = 64                      # invocations per workgroup (v3dv allows 256; every target ≥ 128)
UNARY = {"Relu": "max(a, 0.0)", "Tanh": "tanh(clamp(a, -15.0, 15.0))", "Sigmoid": "1.0 / (1.0 + exp(-clamp(a, -80.0, 80.0)))",
         "Neg": "-a", "Exp": "exp(a)", "Abs": "abs(a)", "Sqrt": "sqrt(a)", "Identity": "a",
         "Softplus": "log(1.0 + exp(a))", "Erf": "erf_(a)",
         "Gelu": "0.5 * a * (1.0 + erf_(a * 0.70710678118654752))"}
GELU_TANH = "0.5 * a * (1.0 + tanh(clamp(0.7978845608028654 * (a + 0.044715 * a * a * a), -15.0, 15.0)))"
BINARY = {"Add": "a + b", "Sub": "a - b", "Mul": "a * b", "Div": "a / b", "Max": "max(a, b)", "Min": "min(a, b)"}
COPIES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
NEG_INF, POS_INF = "uintBitsToFloat(0xff800000u)", "uintBitsToFloat(0x7f800000u)"
POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
REDUCES = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"}
HEADER = f"""#version 450
layout(local_size_x = {LOCAL}) in;
layout(std430, set = 0, binding = 0) buffer Arena {{ float arena[]; }};
layout(std430, set = 0, binding = 1) readonly buffer Weights {{ float weights[]; }};
float erf_(float x) {{                      // Abramowitz & Stegun 7.1.26: |error| < 1.5e-7
    float t = 1.0 / (1.0 + 0.3275911 * abs(x));
    float y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
              * exp(-x * x);
    return sign(x) * y;
}}
"""


class Kernel:
    def __init__(self, name: str, source: str, count: int):
        self.name, self.source, self.count = name, source, count
        self.groups = (count + LOCAL - 1) // LOCAL


def _strides(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _bcast(shape, out_shape) -> list[int]:
    """Strides of ``shape`` broadcast to ``out_shape`` (0 where a dimension is broadcast)."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(shape, out_shape, _strides(shape))]


class Step:
    """The code of one step: where each tensor lives (``ref``), coordinates of the output element."""

    def __init__(self, ref, graph, out: str):
        self.ref, self.graph = ref, graph
        self.shape = tuple(graph.type_of(out).shape)
        self.out = out

    def at(self, name: str, index: str) -> str:
        buf, off = self.ref(name)
        return f"{buf}[{off}u + {index}]"

    def coords(self) -> str:
        """c0..c{r-1} of output element ``idx``."""
        lines, rank = ["uint rem = idx;"], len(self.shape)
        for d in reversed(range(rank)):
            lines.append(f"uint c{d} = rem % {self.shape[d]}u; rem /= {self.shape[d]}u;")
        return "\n    ".join(lines)

    def load(self, name: str) -> str:
        """The element of ``name`` (broadcast to the output's shape) at the current coordinates."""
        st = _bcast(self.graph.type_of(name).shape, self.shape)
        terms = [f"c{d} * {s}u" for d, s in enumerate(st) if s] or ["0u"]
        return self.at(name, " + ".join(terms))

    def epilogue(self, node) -> str:
        lines = []
        for e in node.epilogue:
            if e.op == "Clip":
                lines.append(f"{{ float a = v; v = {_clip(self.graph, e.attrs, e.operands)}; }}")
            elif e.op in UNARY:
                lines.append(f"{{ float a = v; v = {_unary(e.op, e.attrs)}; }}")
            elif e.op in BINARY and len(e.operands) == 1:
                other = self.load(e.operands[0])
                a, b = ("v", other) if e.pos == 0 else (other, "v")
                lines.append(f"{{ float a = {a}; float b = {b}; v = {BINARY[e.op]}; }}")
            else:
                raise BackendError(f"vulkan backend: no kernel for the fused {e.op} of {node.name}")
        return "\n    ".join(lines)

    def kernel(self, name: str, body: str, node) -> Kernel:
        count = int(np.prod(self.shape)) if self.shape else 1
        src = (HEADER + "void main() {\n    uint idx = gl_GlobalInvocationID.x;\n"
               f"    if (idx >= {count}u) return;\n    {self.coords()}\n    float v;\n    {body}\n"
               f"    {self.epilogue(node)}\n    {self.at(self.out, 'idx')} = v;\n}}\n")
        return Kernel(name, src, count)


def _unary(op: str, attrs: dict) -> str:
    return GELU_TANH if op == "Gelu" and attrs.get("approximate") == "tanh" else UNARY[op]


def _clip(graph, attrs: dict, bounds: list) -> str:
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


def _conv(step: Step, node) -> str:
    """Direct 2-D convolution (NCHW, any group, stride, dilation, padding): one output element
    per invocation, the bias added, border taps skipped."""
    from ...ops.conv import _geometry
    x, w = node.inputs[0], node.inputs[1]
    xs, ws = step.graph.type_of(x).shape, step.graph.type_of(w).shape
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), _, _ = _geometry(node, xs, ws)
    g = int(node.attrs.get("group", 1))
    cg, mg, (c, h, wd) = ws[1], ws[0] // g, xs[1:]
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


def _pool(step: Step, node) -> str:
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


def _reduce(step: Step, node) -> str:
    """ReduceSum, ReduceMean, ReduceMax, ReduceMin over constant axes: a loop per reduced axis."""
    from ...ops.reduce import _axes
    x = node.inputs[0]
    xs = step.graph.type_of(x).shape
    consts = [step.graph.consts.get(i) if i else None for i in node.inputs]
    axes = _axes(node, [step.graph.type_of(i) if i else None for i in node.inputs], consts) or ()
    keep = int(node.attrs.get("keepdims", 1))
    strides, out_d, loops, index = _strides(xs), 0, [], []
    for d in range(len(xs)):
        if d in axes:
            loops.append(f"for (uint r{d} = 0u; r{d} < {xs[d]}u; r{d}++)")
            index.append(f"r{d} * {strides[d]}u")
            out_d += keep
        else:
            index.append(f"c{out_d} * {strides[d]}u")
            out_d += 1
    op = node.op[len("Reduce"):]
    init = {"Sum": "0.0", "Mean": "0.0", "Max": NEG_INF, "Min": POS_INF}[op]
    take = {"Sum": "acc += x;", "Mean": "acc += x;", "Max": "acc = max(acc, x);", "Min": "acc = min(acc, x);"}[op]
    count = int(np.prod([xs[a] for a in axes])) if axes else 1
    body = f"float acc = {init};\n    " + " ".join(loops) + f" {{ float x = {step.at(x, ' + '.join(index) or '0u')}; {take} }}\n"
    return body + (f"    v = acc / {float(count)!r};" if op == "Mean" else "    v = acc;")


def _concat(step: Step, node) -> str:
    axis = int(node.attrs.get("axis", 0)) % len(step.shape)
    lines, start = [], 0
    for i, name in enumerate(node.inputs):
        ish = step.graph.type_of(name).shape
        st = _strides(ish)
        idx = " + ".join(f"{'(c%d - %du)' % (d, start) if d == axis else 'c%d' % d} * {st[d]}u" for d in range(len(ish)))
        cond = f"c{axis} < {start + ish[axis]}u"
        lines.append(f"{'if' if i == 0 else 'else if'} ({cond}) v = {step.at(name, idx)};")
        start += ish[axis]
    return "v = 0.0;\n    " + "\n    ".join(lines)


def _transpose(step: Step, node) -> str:
    xs = step.graph.type_of(node.inputs[0]).shape
    perm = node.attrs.get("perm") or list(reversed(range(len(xs))))
    st = _strides(xs)
    return f"v = {step.at(node.inputs[0], ' + '.join(f'c{o} * {st[p]}u' for o, p in enumerate(perm)) or '0u')};"


def _softmax(step: Step, node) -> str:
    """Softmax over one axis (opset ≥ 13): each element recomputes its row's max and sum."""
    axis = int(node.attrs.get("axis", -1)) % len(step.shape)
    st, n = _strides(step.shape), step.shape[axis]
    x = node.inputs[0]
    base = " + ".join(f"c{d} * {st[d]}u" for d in range(len(step.shape)) if d != axis) or "0u"
    row = f"({base}) + r * {st[axis]}u"
    return (f"uint b = {base};\n    float m = -3.4e38;\n"
            f"    for (uint r = 0u; r < {n}u; r++) {{ m = max(m, {step.at(x, row)}); }}\n"
            f"    float s = 0.0;\n    for (uint r = 0u; r < {n}u; r++) {{ s += exp({step.at(x, row)} - m); }}\n"
            f"    v = exp({step.at(x, 'idx')} - m) / s;")


def _batched_matmul(step: Step, node) -> str:
    """MatMul over (…, M, K) × (…, K, N), the batch dimensions broadcast as numpy does."""
    a, b = node.inputs
    sa, sb = step.graph.type_of(a).shape, step.graph.type_of(b).shape
    r, k = len(step.shape), sa[-1]
    batch = step.shape[:-2]

    def base(shape):
        st = _bcast(tuple(shape[:-2]), batch) if len(shape) > 2 else [0] * len(batch)
        plane = shape[-2] * shape[-1]
        return " + ".join([f"c{d} * {s * plane}u" for d, s in enumerate(st) if s] or ["0u"])
    ai = f"{base(sa)} + c{r - 2} * {k}u + kk"
    bi = f"{base(sb)} + kk * {sb[-1]}u + c{r - 1}"
    return (f"float acc = 0.0;\n    for (uint kk = 0u; kk < {k}u; kk++) {{ acc += {step.at(a, ai)} * {step.at(b, bi)}; }}\n"
            "    v = acc;")


def _layernorm(step: Step, node) -> str:
    """LayerNormalization over the dimensions from ``axis``: each element recomputes its row's
    mean and variance (rows are short in policies; no shared memory needed)."""
    axis = int(node.attrs.get("axis", -1)) % len(step.shape)
    eps = float(node.attrs.get("epsilon", 1e-5))
    n = int(np.prod(step.shape[axis:]))
    x = node.inputs[0]
    inner = " + ".join(f"c{d} * {st}u" for d, st in zip(range(axis, len(step.shape)), _strides(step.shape[axis:])))
    row = f"(idx - ({inner}))"
    body = (f"uint r0 = {row};\n    float m = 0.0;\n"
            f"    for (uint r = 0u; r < {n}u; r++) {{ m += {step.at(x, 'r0 + r')}; }}\n    m /= {float(n)!r};\n"
            f"    float q = 0.0;\n    for (uint r = 0u; r < {n}u; r++) {{ float d = {step.at(x, 'r0 + r')} - m; q += d * d; }}\n"
            f"    v = ({step.at(x, 'idx')} - m) * inversesqrt(q / {float(n)!r} + {eps!r});\n"
            f"    v *= {step.load(node.inputs[1])};")
    if len(node.inputs) > 2 and node.inputs[2]:
        body += f"\n    v += {step.load(node.inputs[2])};"
    return body


def _gather(step: Step, node) -> str:
    """Gather with constant indices (an exported embedding's positions): baked into the shader."""
    x, idx = node.inputs
    xs = step.graph.type_of(x).shape
    axis = int(node.attrs.get("axis", 0)) % len(xs)
    ind = np.asarray(step.graph.consts[idx]).reshape(-1) % xs[axis]
    ishape = step.graph.type_of(idx).shape
    table = "uint[](" + ", ".join(f"{int(i)}u" for i in ind) + ")" if ind.size > 1 else None
    flat = " + ".join(f"c{axis + d} * {st}u" for d, st in enumerate(_strides(ishape))) or "0u"
    pick = f"{table}[{flat}]" if table else f"{int(ind[0]) if ind.size else 0}u"
    st = _strides(xs)
    terms = [f"c{d} * {st[d]}u" for d in range(axis)] + [f"({pick}) * {st[axis]}u"]
    terms += [f"c{d + len(ishape) - 1} * {st[d]}u" for d in range(axis + 1, len(xs))]
    return f"v = {step.at(x, ' + '.join(terms))};"


def _gemm(step: Step, node) -> str:
    a, b = node.inputs[0], node.inputs[1]
    ta, tb = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    sa, sb = step.graph.type_of(a).shape, step.graph.type_of(b).shape
    if len(sa) != 2 or len(sb) != 2:
        raise BackendError(f"vulkan backend: {node.name}: only 2-D products (got {list(sa)} × {list(sb)})")
    k = sa[0] if ta else sa[1]
    ai = "k * {m}u + c0".format(m=sa[1]) if ta else f"c0 * {sa[1]}u + k"
    bi = f"c1 * {sb[1]}u + k" if tb else f"k * {sb[1]}u + c1"
    body = (f"float acc = 0.0;\n    for (uint k = 0u; k < {k}u; k++) {{ acc += {step.at(a, ai)} * {step.at(b, bi)}; }}\n"
            f"    v = {alpha!r} * acc;")
    if len(node.inputs) > 2 and node.inputs[2]:
        body += f"\n    v += {beta!r} * {step.load(node.inputs[2])};"
    return body


def generate(graph, node, ref) -> Kernel:
    """The shader of one step (``ref(name)`` → ("arena" | "weights", offset in floats))."""
    step = Step(ref, graph, node.outputs[0])
    if node.op == "Gemm" or (node.op == "MatMul" and len(step.shape) == 2):
        body = _gemm(step, node)
    elif node.op == "MatMul":
        body = _batched_matmul(step, node)
    elif node.op == "Conv":
        body = _conv(step, node)
    elif node.op in POOLS:
        body = _pool(step, node)
    elif node.op in REDUCES:
        body = _reduce(step, node)
    elif node.op == "Concat":
        body = _concat(step, node)
    elif node.op == "Transpose":
        body = _transpose(step, node)
    elif node.op == "Softmax":
        body = _softmax(step, node)
    elif node.op == "Clip":
        body = f"float a = {step.load(node.inputs[0])};\n    v = {_clip(step.graph, node.attrs, node.inputs[1:])};"
    elif node.op in UNARY:
        body = f"float a = {step.load(node.inputs[0])};\n    v = {_unary(node.op, node.attrs)};"
    elif node.op == "LayerNormalization":
        body = _layernorm(step, node)
    elif node.op == "Gather":
        body = _gather(step, node)
    elif node.op in BINARY:
        body = (f"float a = {step.load(node.inputs[0])};\n    float b = {step.load(node.inputs[1])};\n"
                f"    v = {BINARY[node.op]};")
    elif node.op in COPIES:
        body = f"v = {step.at(node.inputs[0], 'idx')};"
    else:
        raise BackendError(f"vulkan backend: no kernel for {node.op} ({node.name})")
    return step.kernel(node.name, body, node)


def _why_not(g, node) -> str | None:
    """Why one step has no kernel here (None: it has one)."""
    rank = len(g.type_of(node.outputs[0]).shape)
    if node.op in ("Conv",) + tuple(POOLS) and rank != 4:
        return f"{node.op} over {rank - 2} spatial dimensions ({node.name}); two only"
    if node.op in POOLS and len([o for o in node.outputs if o]) > 1:
        return f"{node.op} with indices ({node.name})"
    if node.op == "Clip" and any(i and i not in g.consts for i in node.inputs[1:]):
        return f"Clip with bounds computed at run time ({node.name})"
    if node.op in BINARY and len([i for i in node.inputs if i]) != 2:
        return f"{node.op} over {len(node.inputs)} inputs ({node.name}); two only"
    if node.op == "MatMul" and not all(len(g.type_of(i).shape) >= 2 for i in node.inputs):
        return f"MatMul of a vector ({node.name})"
    if node.op == "Gather" and node.inputs[1] not in g.consts:
        return f"Gather with indices computed at run time ({node.name})"
    if node.op == "LayerNormalization" and len([o for o in node.outputs if o]) > 1:
        return f"LayerNormalization with its mean and deviation as outputs ({node.name})"
    if node.op in REDUCES and any(i and i not in g.consts for i in node.inputs[1:]):
        return f"{node.op} over axes computed at run time ({node.name})"
    known = UNARY.keys() | BINARY.keys() | COPIES | POOLS | REDUCES | {
        "Gemm", "MatMul", "Conv", "Concat", "Transpose", "Softmax", "Clip", "LayerNormalization", "Gather"}
    if node.op not in known:
        return f"no kernel for {node.op} ({node.name})"
    for e in node.epilogue:
        if e.op == "Clip" and all(o in g.consts for o in e.operands if o):
            continue
        if e.op not in UNARY and not (e.op in BINARY and len(e.operands) == 1):
            return f"no kernel for the fused {e.op} of {node.name}"
    return None


def unsupported(plan) -> str | None:
    """Why this backend cannot run ``plan`` (the first step or tensor outside it), or None."""
    g = plan.graph
    params = {i for n in g.nodes if n.op in ("Gather", "Clip") or n.op in REDUCES | COPIES for i in n.inputs[1:] if i}
    params |= {i for n in g.nodes for e in n.epilogue if e.op == "Clip" for i in e.operands if i}
    for name, t in g.types.items():
        if 0 in t.shape:
            return f"tensor {name} has no elements"
        if t.dtype != np.float32 and not (name in params and name in g.consts):
            return f"tensor {name} is {t.dtype}; the vulkan backend runs float32 plans"
    skip = set(plan.memory.skip)
    for s, node in enumerate(g.nodes):
        why = None if s in skip else _why_not(g, node)
        if why:
            return why if why.startswith("no kernel") else f"no kernel for {why}"
    return None


def spirv(source: str) -> bytes:
    """GLSL → SPIR-V with glslangValidator (cached by the source's hash, in this process)."""
    key = hashlib.sha256(source.encode()).hexdigest()
    if key in _cache:
        return _cache[key]
    with tempfile.TemporaryDirectory(prefix="nnos-glsl-") as d:
        src, out = os.path.join(d, "k.comp"), os.path.join(d, "k.spv")
        with open(src, "w") as f:
            f.write(source)
        try:
            r = subprocess.run(["glslangValidator", "-V", "--target-env", "vulkan1.1", src, "-o", out],
                               capture_output=True, text=True, timeout=60)
        except FileNotFoundError as e:
            raise BackendError("vulkan backend: glslangValidator is not installed (Debian: glslang-tools)") from e
        if r.returncode != 0:
            raise BackendError(f"vulkan backend: a generated shader did not compile: {r.stdout[-500:]}")
        with open(out, "rb") as f:
            _cache[key] = f.read()
    return _cache[key]


_cache: dict[str, bytes] = {}
