"""Each step of a plan as a GLSL compute shader with its shapes and offsets baked in, compiled to
SPIR-V by glslang (Debian's glslang-tools). The code is generated here from the plan, never
taken from anywhere else. Two storage buffers per shader: the arena (binding 0) and the weights
(binding 1), float32 words; one invocation per output element.

What is covered (each op's body in glsl.py): Gemm and MatMul (batched, broadcast), 2-D Conv and
pooling, reductions, Softmax, LayerNormalization, Concat, Transpose, Gather with constant indices,
elementwise ops with numpy broadcasting (Gelu and Erf too), copies (Reshape, Flatten, Squeeze,
Unsqueeze, Identity when not a view), and fused epilogues. ``unsupported(plan)`` names the first
step outside that, so the backend can be passed over.

The step bodies are the C that GLSL and CUDA C share; a dialect wraps them (``GLSL`` here, one
shader a step; the cuda backend's in cuda/source.py, one module for the plan).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile

import numpy as np

from ...errors import BackendError
from . import glsl
from .glsl import BINARY, UNARY, bcast, unary

LOCAL = 64                      # invocations per workgroup (v3dv allows 256; every target ≥ 128)
WEIGHT_ALIGN = 16               # floats
COPIES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
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


class Glsl:
    """Each step its own compute shader: ``main`` over the arena and the weights buffers."""

    def lanes(self, reduction: int) -> int:
        """Invocations that share one output element's reduction (1: each computes its own)."""
        return 1

    def function(self, index: int, count: int, inner: str, lanes: int = 1) -> str:
        return (HEADER + "void main() {\n    uint idx = gl_GlobalInvocationID.x;\n"
                f"    if (idx >= {count}u) return;\n{inner}}}\n")

    def table(self, name: str, values: list[int]) -> str:
        return f"const uint {name}[{len(values)}] = uint[](" + ", ".join(f"{v}u" for v in values) + ");"


GLSL = Glsl()


class Kernel:
    def __init__(self, name: str, source: str, count: int, lanes: int = 1, work: int = 0):
        self.name, self.source, self.count, self.lanes = name, source, count, lanes
        self.groups = (count * lanes + LOCAL - 1) // LOCAL
        self.work = work or count              # multiply-adds (or elements), roughly: what fits one block


class Step:
    """The code of one step: where each tensor lives (``ref``), coordinates of the output element."""

    def __init__(self, ref, graph, out: str, dialect=GLSL, index: int = 0):
        self.ref, self.graph, self.dialect, self.index = ref, graph, dialect, index
        self.shape = tuple(graph.type_of(out).shape)
        self.out = out
        self.lanes, self.per_item = 1, 1

    def reduction(self, var: str, n: int) -> str:
        """The loop over one output element's reduction: all of it here, or this lane's share
        when ``lanes`` invocations share it (``lane`` is the invocation's place among them)."""
        self.lanes, self.per_item = self.dialect.lanes(n), n
        if self.lanes == 1:
            return f"for (uint {var} = 0u; {var} < {n}u; {var}++)"
        return f"for (uint {var} = lane; {var} < {n}u; {var} += {self.lanes}u)"

    def gathered(self, acc: str) -> str:
        """After a shared reduction: the lanes' partial sums added into lane 0's ``acc``; the others stop."""
        return "" if self.lanes == 1 else self.dialect.lane_sum(acc, self.lanes)

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
        st = bcast(self.graph.type_of(name).shape, self.shape)
        terms = [f"c{d} * {s}u" for d, s in enumerate(st) if s] or ["0u"]
        return self.at(name, " + ".join(terms))

    def epilogue(self, node) -> str:
        lines = []
        for e in node.epilogue:
            if e.op == "Clip":
                lines.append(f"{{ float a = v; v = {glsl.clip(self.graph, e.attrs, e.operands)}; }}")
            elif e.op in UNARY:
                lines.append(f"{{ float a = v; v = {unary(e.op, e.attrs)}; }}")
            elif e.op in BINARY and len(e.operands) == 1:
                other = self.load(e.operands[0])
                a, b = ("v", other) if e.pos == 0 else (other, "v")
                lines.append(f"{{ float a = {a}; float b = {b}; v = {BINARY[e.op]}; }}")
            else:
                raise BackendError(f"no kernel for the fused {e.op} of {node.name}")
        return "\n    ".join(lines)

    def kernel(self, name: str, body: str, node) -> Kernel:
        count = int(np.prod(self.shape)) if self.shape else 1
        inner = (f"    {self.coords()}\n    float v;\n    {body}\n"
                 f"    {self.epilogue(node)}\n    {self.at(self.out, 'idx')} = v;\n")
        source = self.dialect.function(self.index, count, inner, self.lanes)
        return Kernel(name, source, count, self.lanes, count * self.per_item)


def generate(graph, node, ref, dialect=GLSL, index: int = 0) -> Kernel:
    """The code of one step (``ref(name)`` → ("arena" | "weights", offset in floats)): a whole
    shader in GLSL, the step's function in another dialect (``index`` names it)."""
    step = Step(ref, graph, node.outputs[0], dialect, index)
    if node.op == "Gemm" or (node.op == "MatMul" and len(step.shape) == 2):
        body = glsl.gemm(step, node)
    elif node.op == "MatMul":
        body = glsl.batched_matmul(step, node)
    elif node.op == "Conv":
        body = glsl.conv(step, node)
    elif node.op in POOLS:
        body = glsl.pool(step, node)
    elif node.op in REDUCES:
        body = glsl.reduce(step, node)
    elif node.op == "Concat":
        body = glsl.concat(step, node)
    elif node.op == "Transpose":
        body = glsl.transpose(step, node)
    elif node.op == "Softmax":
        body = glsl.softmax(step, node)
    elif node.op == "Clip":
        body = f"float a = {step.load(node.inputs[0])};\n    v = {glsl.clip(step.graph, node.attrs, node.inputs[1:])};"
    elif node.op in UNARY:
        body = f"float a = {step.load(node.inputs[0])};\n    v = {unary(node.op, node.attrs)};"
    elif node.op == "LayerNormalization":
        body = glsl.layernorm(step, node)
    elif node.op == "Gather":
        body = glsl.gather(step, node)
    elif node.op in BINARY:
        body = (f"float a = {step.load(node.inputs[0])};\n    float b = {step.load(node.inputs[1])};\n"
                f"    v = {BINARY[node.op]};")
    elif node.op in COPIES:
        body = f"v = {step.at(node.inputs[0], 'idx')};"
    else:
        raise BackendError(f"no kernel for {node.op} ({node.name})")
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


def weight_blob(graph) -> tuple[np.ndarray, dict[str, int]]:
    """Every float32 constant in one array, each at an aligned offset (in floats); the others
    (Gather's indices, shapes, axes) are baked into the code."""
    offsets, total = {}, 0
    consts = {n: c for n, c in graph.consts.items() if c.dtype == np.float32}
    for name, c in consts.items():
        offsets[name] = total
        total += (c.size + WEIGHT_ALIGN - 1) // WEIGHT_ALIGN * WEIGHT_ALIGN
    blob = np.zeros(max(total, WEIGHT_ALIGN), np.float32)
    for name, c in consts.items():
        blob[offsets[name]:offsets[name] + c.size] = c.reshape(-1)
    return blob, offsets


def locate(plan, woff: dict):
    """``ref(name)``: where a tensor lives for the kernels, ("weights" | "arena", offset in floats)."""
    tensors = plan.memory.tensors

    def ref(name: str) -> tuple[str, int]:
        if name in woff:
            return "weights", woff[name]
        if tensors[name] % 4:
            raise BackendError(f"tensor {name} is not 4-byte aligned in the arena")
        return "arena", tensors[name] // 4
    return ref


def unsupported(plan) -> str | None:
    """Why this backend cannot run ``plan`` (the first step or tensor outside it), or None."""
    g = plan.graph
    params = {i for n in g.nodes if n.op in ("Gather", "Clip") or n.op in REDUCES | COPIES for i in n.inputs[1:] if i}
    params |= {i for n in g.nodes for e in n.epilogue if e.op == "Clip" for i in e.operands if i}
    for name, t in g.types.items():
        if 0 in t.shape:
            return f"tensor {name} has no elements"
        if t.dtype != np.float32 and not (name in params and name in g.consts):
            return f"tensor {name} is {t.dtype}; the generated kernels run float32 plans"
    skip = set(plan.memory.skip)
    for s, node in enumerate(g.nodes):
        why = None if s in skip else _why_not(g, node)
        if why:
            return why if why.startswith("no kernel") else f"no kernel for {why}"
    return None


def check_limits(kernels: list, limits: dict, buffer_bytes: dict) -> None:
    """A plan this device cannot run as generated is refused, naming the limit it exceeds."""
    need = {"max_workgroup_invocations": LOCAL, "max_workgroup_size_x": LOCAL, "max_storage_buffers_per_stage": 2}
    for name, n in need.items():
        if limits[name] < n:
            raise BackendError(f"vulkan backend: the shaders need {name} ≥ {n}; this device has {limits[name]}")
    for k in kernels:
        if k.groups > limits["max_workgroup_count_x"]:
            raise BackendError(f"vulkan backend: step {k.name} needs {k.groups} workgroups; this device's "
                               f"max_workgroup_count_x is {limits['max_workgroup_count_x']}")
    for what, n in buffer_bytes.items():
        if n > limits["max_storage_buffer_range"]:
            raise BackendError(f"vulkan backend: the {what} takes {n} bytes; this device's max_storage_buffer_range "
                               f"is {limits['max_storage_buffer_range']}")


def plan_kernels(plan) -> tuple[list[Kernel], np.ndarray]:
    """Every step's kernel (the steps the memory plan skips have none) and the weights blob."""
    g, skip = plan.graph, set(plan.memory.skip)
    blob, woff = weight_blob(g)
    ref = locate(plan, woff)
    try:
        return [generate(g, node, ref) for s, node in enumerate(g.nodes) if s not in skip], blob
    except BackendError as e:
        raise BackendError(f"vulkan backend: {e}") from e


def embed(plan) -> int:
    """Compile every step's shader now and keep the SPIR-V in the plan (``plan.kernels["vulkan"]``,
    saved with it): a device binding it needs no shader compiler. Returns how many."""
    why = unsupported(plan)
    if why:
        raise BackendError(f"vulkan backend: {why}")
    table = {}
    for k in plan_kernels(plan)[0]:
        table[source_key(k.source)] = spirv(k.source)
    plan.kernels["vulkan"] = table
    return len(table)


def source_key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def cache_dir() -> str:
    from ... import flags
    return os.path.expanduser(flags.VULKAN_CACHE.get())


def spirv(source: str, embedded: dict[str, bytes] | None = None) -> bytes:
    """GLSL → SPIR-V: the plan's own (``embedded``, made by ``embed`` when it was compiled), else
    glslangValidator's, kept by the source's hash in this process and in NNOS_VULKAN_CACHE (a
    plan bound again, or after a reboot, needs no shader compiler)."""
    key = source_key(source)
    code = (embedded or {}).get(key)
    if code is not None:
        if len(code) < 20 or len(code) % 4 or code[:4] != SPIRV_MAGIC:
            raise BackendError(f"vulkan backend: the plan's SPIR-V for {key[:12]} is not a SPIR-V module "
                               f"({len(code)} bytes starting {code[:4].hex()})")
        return code
    if key in _cache:
        return _cache[key]
    path = os.path.join(cache_dir(), "spv", f"{key}.spv")
    try:
        with open(path, "rb") as f:
            code = f.read()
        if len(code) >= 20 and code[:4] == SPIRV_MAGIC:                # a whole file
            _cache[key] = code
            return code
    except OSError:
        pass
    _cache[key] = code = _glslang(source)
    try:
        from ...fsutil import atomic_write
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, code)
    except OSError:
        pass                                          # a read-only or full cache: compiled again next time
    return code


def _glslang(source: str) -> bytes:
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
            return f.read()


_cache: dict[str, bytes] = {}
SPIRV_MAGIC = b"\x03\x02\x23\x07"               # 0x07230203, little-endian
