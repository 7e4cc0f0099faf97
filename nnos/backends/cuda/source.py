"""The plan's steps as one CUDA C module: each step a ``__global__`` function ``k<i>`` over the
arena and the weights (float32 words), one thread per output element. The step bodies are the
ones the vulkan backend's shaders use (vulkan/kernels.py, vulkan/glsl.py: the C that GLSL and
CUDA C share); this dialect maps GLSL's few built-ins onto CUDA's and makes every literal a
float, so the arithmetic stays float32 as in the shaders."""
from __future__ import annotations

import re

from ..vulkan import kernels

LOCAL = kernels.LOCAL
HEADER = r"""typedef unsigned int uint;
#define abs(x) fabsf(x)
#define max(a, b) fmaxf((a), (b))
#define min(a, b) fminf((a), (b))
#define exp(x) expf(x)
#define log(x) logf(x)
#define tanh(x) tanhf(x)
#define sqrt(x) sqrtf(x)
#define inversesqrt(x) rsqrtf(x)
#define uintBitsToFloat(u) __uint_as_float(u)
__device__ __forceinline__ float clamp(float x, float lo, float hi) { return fminf(fmaxf(x, lo), hi); }
__device__ __forceinline__ float sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }
__device__ __forceinline__ float erf_(float x) { return erff(x); }
"""
_FLOAT = re.compile(r"(?<![\w.])(\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)(?![\w.])")
WARP = 32
SPLIT = 64                      # a reduction this long is shared by a warp (an output element a warp)


class CudaC:
    """Each step a function of one module (the graph launches them in order on one stream). A
    long reduction (a product's K, a convolution's taps) is shared by the 32 threads of a warp,
    its partial sums added with shuffles: batch-1 policies have few outputs and long rows."""

    def lanes(self, reduction: int) -> int:
        return WARP if reduction >= SPLIT else 1

    def lane_sum(self, acc: str, lanes: int) -> str:
        return (f"for (uint o = {lanes // 2}u; o > 0u; o >>= 1) {acc} += __shfl_down_sync(0xffffffffu, {acc}, o);\n"
                "    if (lane != 0u) return;")

    def function(self, index: int, count: int, inner: str, lanes: int = 1) -> str:
        body = _FLOAT.sub(r"\1f", inner)
        head = (f'extern "C" __global__ void __launch_bounds__({LOCAL}) k{index}(float* arena, '
                "const float* __restrict__ weights) {\n")
        if lanes == 1:
            return (head + f"    uint idx = blockIdx.x * {LOCAL}u + threadIdx.x;\n"
                    f"    if (idx >= {count}u) return;\n{body}}}\n")
        return (head + f"    uint tid = blockIdx.x * {LOCAL}u + threadIdx.x;\n"
                f"    uint idx = tid / {lanes}u, lane = tid % {lanes}u;\n"
                f"    if (idx >= {count}u) return;          // a whole warp: {LOCAL} is a multiple of {lanes}\n{body}}}\n")

    def table(self, name: str, values: list[int]) -> str:
        return f"const uint {name}[{len(values)}] = {{" + ", ".join(f"{v}u" for v in values) + "};"


class CudaBlock(CudaC):
    """A small plan as one kernel of one thread block: each step a loop of the block's threads
    over its outputs, a barrier after it — one launch instead of one per step, where a launch
    costs more than the work (an MLP policy). A long reduction is a warp's, as in CudaC (the
    block and every step's count × 32 are whole warps: a warp is in or out of a round together)."""

    def lane_sum(self, acc: str, lanes: int) -> str:
        return super().lane_sum(acc, lanes).replace("return;", "continue;")

    def function(self, index: int, count: int, inner: str, lanes: int = 1) -> str:
        body = _FLOAT.sub(r"\1f", inner).replace("\n    ", "\n      ")
        if lanes == 1:
            return (f"  for (uint idx = threadIdx.x; idx < {count}u; idx += blockDim.x) {{  // step {index}\n"
                    f"  {body}  }}\n  __syncthreads();\n")
        return (f"  for (uint tid = threadIdx.x; tid < {count * lanes}u; tid += blockDim.x) {{  // step {index}\n"
                f"      uint idx = tid / {lanes}u, lane = tid % {lanes}u;\n  {body}  }}\n  __syncthreads();\n")


class HostBlock(CudaBlock):
    """CudaBlock with every reduction a thread's own: what tests/support/cuda_host.py runs one
    thread at a time (a warp's shuffles cannot be taken in order there)."""

    def lanes(self, reduction: int) -> int:
        return 1


CUDA_C, CUDA_BLOCK = CudaC(), CudaBlock()
BLOCK = 1024                    # threads of the one block (32 warps)
ONE_BLOCK_WORK = 65536          # multiply-adds a plan may take to run as one block
ALIGN = 256                     # bytes: each input and output in the pinned host buffers


def staging(regions: list) -> tuple[list, int]:
    """Where each of ``regions`` ([(arena byte offset, nbytes)]) lies in its pinned host buffer:
    the starts, and the buffer's size."""
    starts, total = [], 0
    for _, n in regions:
        starts.append(total)
        total += (n + ALIGN - 1) // ALIGN * ALIGN
    return starts, max(total, ALIGN)


def _copies(regions: list, into_arena: bool) -> str:
    """The block's own copies between the pinned host buffers (mapped: the GPU reads and writes
    them over the bus) and the arena, a float at a time by every thread."""
    lines = []
    for (off, n), start in zip(regions, staging(regions)[0]):
        a, h = f"arena[{off // 4}u + i]", f"host_{'in' if into_arena else 'out'}[{start // 4}u + i]"
        lines.append(f"  for (uint i = threadIdx.x; i < {n // 4}u; i += blockDim.x) "
                     f"{a if into_arena else h} = {h if into_arena else a};\n")
    return "".join(lines) + ("  __syncthreads();\n" if into_arena else "")


def module(plan, ref, block=CUDA_BLOCK) -> tuple[str, list, list]:
    """The module's source, its kernels (the plan's steps less the views) and the launches
    [(function, blocks, threads, copies inside)] in order: a small plan is one block that also
    reads its inputs from and writes its outputs to the pinned host buffers (one graph node);
    a larger one a kernel a step, the copies beside them in the graph."""
    g, skip, mem = plan.graph, set(plan.memory.skip), plan.memory
    steps = [node for s, node in enumerate(g.nodes) if s not in skip]
    ks = [kernels.generate(g, node, ref, CUDA_C, i) for i, node in enumerate(steps)]
    if 1 < len(ks) and sum(k.work for k in ks) <= ONE_BLOCK_WORK:
        ks = [kernels.generate(g, node, ref, block, i) for i, node in enumerate(steps)]
        ins = [(mem.tensors[n], g.types[n].nbytes) for n in g.inputs]
        outs = [(mem.tensors[n], g.types[n].nbytes) for n in g.outputs]
        src = (HEADER + f'extern "C" __global__ void __launch_bounds__({BLOCK}) k0(float* arena, '
               "const float* __restrict__ weights, const float* __restrict__ host_in, float* __restrict__ host_out) {\n"
               + _copies(ins, True) + "".join(k.source for k in ks) + _copies(outs, False) + "}\n")
        return src, ks, [("k0", 1, BLOCK, True)]
    return HEADER + "\n".join(k.source for k in ks), ks, [(f"k{i}", k.groups, LOCAL, False) for i, k in enumerate(ks)]
