"""The cuda backend's generated module checked without a GPU: the same CUDA C compiled by the
host's C++ compiler with the few CUDA names defined for one thread at a time, each kernel run
over every block and thread in launch order. It checks the source (it compiles as C++, every
literal a float, the dialect's built-ins, a warp's shared reductions) and its arithmetic against
the reference; the GPU
itself (NVRTC, the graph, the copies) is checked on a GPU by test_cuda_backend.py."""
from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np

from nnos.backends.cuda import source
from nnos.backends.vulkan import kernels

PRELUDE = r"""#include <math.h>
#include <string.h>
struct nnos_dim3 { unsigned x, y, z; };
static nnos_dim3 blockIdx, threadIdx, blockDim;
#define __syncthreads()
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__ __restrict
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
// a warp's shuffle-down sum, one thread at a time: lanes run 31 → 0, each leaves its partial sum
// at the first step, and lane 0 (last) takes the others' total
static float nnos_partial[32];
static inline float __shfl_down_sync(unsigned, float v, unsigned o) {
    unsigned lane = threadIdx.x % 32u;
    if (o != 16u) return 0.0f;
    nnos_partial[lane] = v;
    if (lane != 0u) return 0.0f;
    float s = 0.0f;
    for (int i = 1; i < 32; i++) s += nnos_partial[i];
    return s;
}
"""


class HostModule:
    """``run(arena, weights)``: every kernel of the plan in order over numpy float32 arrays."""

    def __init__(self, plan, directory: str):
        blob, woff = kernels.weight_blob(plan.graph)
        src, ks, launches = source.module(plan, kernels.locate(plan, woff), source.HostBlock())
        self.device_source = source.module(plan, kernels.locate(plan, woff))[0]        # what a GPU gets
        # a kernel a step: every block and thread in turn; the one-block plan (its copies to and
        # from the pinned host buffers inside it): one thread that walks every step's outputs in
        # order (its barriers hold trivially)
        self.inside = any(own for _, _, _, own in launches)
        launch = "\n".join(
            f'extern "C" void launch{i}(float* a, const float* w, const float* hi, float* ho) {{ '
            + (f"blockIdx.x = 0; threadIdx.x = 0; blockDim.x = 1; {name}(a, w, hi, ho); }}" if own else
               f"for (unsigned b = 0; b < {blocks}u; b++) for (int t = {threads - 1}; t >= 0; t--) {{ blockIdx.x = b;"
               f" threadIdx.x = t; blockDim.x = {threads}; {name}(a, w); }} }}")
            for i, (name, blocks, threads, own) in enumerate(launches))
        path = os.path.join(directory, "module.cpp")
        with open(path, "w") as f:
            f.write(PRELUDE + src + launch)
        lib = os.path.join(directory, "module.so")
        r = subprocess.run(["g++", "-std=c++17", "-O1", "-fPIC", "-shared", "-Werror=double-promotion", path, "-o", lib],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        self.so = ctypes.CDLL(lib)
        self.plan, self.count, self.weights = plan, len(launches), blob
        self.source = src

    def __call__(self, feeds: dict) -> dict:
        g, mem = self.plan.graph, self.plan.memory
        arena = np.zeros(mem.arena_bytes // 4 + 16, np.float32)
        ins = [(mem.tensors[n], g.types[n].nbytes) for n in g.inputs]
        outs = [(mem.tensors[n], g.types[n].nbytes) for n in g.outputs]
        (in_at, in_size), (out_at, out_size) = source.staging(ins), source.staging(outs)
        host_in, host_out = np.zeros(in_size // 4, np.float32), np.zeros(out_size // 4, np.float32)
        for (name, x), (off, n), start in zip(feeds.items(), ins, in_at):
            data = np.ascontiguousarray(x, np.float32).view(np.uint8).reshape(-1)
            (host_in.view(np.uint8)[start:start + n] if self.inside else arena.view(np.uint8)[off:off + n])[...] = data
        f32 = ctypes.POINTER(ctypes.c_float)
        args = [v.ctypes.data_as(f32) for v in (arena, self.weights, host_in, host_out)]
        for i in range(self.count):
            getattr(self.so, f"launch{i}")(*args)
        out = {}
        for name, (off, n), start in zip(g.outputs, outs, out_at):
            raw = host_out.view(np.uint8)[start:start + n] if self.inside else arena.view(np.uint8)[off:off + n]
            out[name] = raw.view(g.types[name].dtype).reshape(g.types[name].shape).copy()
        return out
