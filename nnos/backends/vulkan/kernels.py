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
         "Softplus": "log(1.0 + exp(a))"}
BINARY = {"Add": "a + b", "Sub": "a - b", "Mul": "a * b", "Div": "a / b", "Max": "max(a, b)", "Min": "min(a, b)"}
COPIES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
HEADER = f"""#version 450
layout(local_size_x = {LOCAL}) in;
layout(std430, set = 0, binding = 0) buffer Arena {{ float arena[]; }};
layout(std430, set = 0, binding = 1) readonly buffer Weights {{ float weights[]; }};
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
            if e.op in UNARY:
                lines.append(f"{{ float a = v; v = {UNARY[e.op]}; }}")
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
    elif node.op in UNARY:
        body = f"float a = {step.load(node.inputs[0])};\n    v = {UNARY[node.op]};"
    elif node.op in BINARY:
        body = (f"float a = {step.load(node.inputs[0])};\n    float b = {step.load(node.inputs[1])};\n"
                f"    v = {BINARY[node.op]};")
    elif node.op in COPIES:
        body = f"v = {step.at(node.inputs[0], 'idx')};"
    else:
        raise BackendError(f"vulkan backend: no kernel for {node.op} ({node.name})")
    return step.kernel(node.name, body, node)


def unsupported(plan) -> str | None:
    """Why this backend cannot run ``plan`` (the first step or tensor outside it), or None."""
    g = plan.graph
    for name, t in g.types.items():
        if t.dtype != np.float32:
            return f"tensor {name} is {t.dtype}; the vulkan backend runs float32 plans"
    skip = set(plan.memory.skip)
    for s, node in enumerate(g.nodes):
        if s in skip:
            continue
        ok = node.op in UNARY or node.op in BINARY or node.op in COPIES or node.op == "Gemm" or (
            node.op == "MatMul" and all(len(g.type_of(i).shape) == 2 for i in node.inputs))
        if not ok:
            return f"no kernel for {node.op} ({node.name})"
        if node.op in BINARY and len([i for i in node.inputs if i]) != 2:
            return f"no kernel for {node.op} over {len(node.inputs)} inputs ({node.name}); two only"
        for e in node.epilogue:
            if e.op not in UNARY and not (e.op in BINARY and len(e.operands) == 1):
                return f"no kernel for the fused {e.op} of {node.name}"
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
