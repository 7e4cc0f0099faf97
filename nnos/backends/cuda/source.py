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


def module(plan, ref, block=CUDA_BLOCK) -> tuple[str, list, list]:
    """The module's source, its kernels (the plan's steps less the views) and the launches
    [(function, blocks, threads)] in order: one block for a small plan, else a kernel a step."""
    g, skip = plan.graph, set(plan.memory.skip)
    steps = [node for s, node in enumerate(g.nodes) if s not in skip]
    ks = [kernels.generate(g, node, ref, CUDA_C, i) for i, node in enumerate(steps)]
    if 1 < len(ks) and sum(k.work for k in ks) <= ONE_BLOCK_WORK:
        ks = [kernels.generate(g, node, ref, block, i) for i, node in enumerate(steps)]
        src = (HEADER + f'extern "C" __global__ void __launch_bounds__({BLOCK}) k0(float* arena, '
               "const float* __restrict__ weights) {\n" + "".join(k.source for k in ks) + "}\n")
        return src, ks, [("k0", 1, BLOCK)]
    return HEADER + "\n".join(k.source for k in ks), ks, [(f"k{i}", k.groups, LOCAL) for i, k in enumerate(ks)]
