"""CuPy's part of the cuda backend: the module compiled once by NVRTC, the arena and the weights
allocated once on the GPU, pinned host buffers for the inputs and outputs, and the whole plan —
input copies, every step's kernel, output copies, in order on one stream — captured once as a
CUDA graph and launched per call. Every CuPy failure becomes a BackendError naming what failed."""
from __future__ import annotations

import numpy as np

from ...errors import BackendError
from .source import staging


def cupy_module():
    try:
        import cupy
    except Exception as e:                          # noqa: BLE001 - not installed, or built for another CUDA
        raise BackendError(f"cuda backend: CuPy is not usable here ({type(e).__name__}: {e})") from e
    return cupy


def describe(cp) -> dict:
    """The device, its compute capability and the CUDA versions, for reports and gpu checks."""
    rt = cp.cuda.runtime
    dev = rt.getDevice()
    props = rt.getDeviceProperties(dev)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"device": name, "compute_capability": f"{props['major']}.{props['minor']}",
            "driver": rt.driverGetVersion(), "runtime": rt.runtimeGetVersion(), "cupy": cp.__version__}


class PlanGraph:
    """``launch()`` runs the plan once: the inputs from ``host_in``, the outputs to ``host_out``."""

    def __init__(self, source: str, launches: list, arena_bytes: int, weights: np.ndarray, ins: list, outs: list):
        cp = self.cp = cupy_module()
        try:
            self.facts = describe(cp)
            self.module = cp.RawModule(code=source, options=("--std=c++17",)) if launches else None
            fns = [(self.module.get_function(name), blocks, threads, inside) for name, blocks, threads, inside in launches]
            self.arena = cp.zeros(max(arena_bytes, 4) // 4 + 1, cp.float32)
            self.weights = cp.asarray(weights)
            self.stream = cp.cuda.Stream(non_blocking=True)
            self.host_in, self.copy_in = self._pinned(ins, cp.cuda.runtime.memcpyHostToDevice)
            self.host_out, self.copy_out = self._pinned(outs, cp.cuda.runtime.memcpyDeviceToHost)
            self.graph = self._capture(fns, self.copy_in, self.copy_out)
        except BackendError:
            raise
        except cp.cuda.memory.OutOfMemoryError as e:
            raise BackendError(f"cuda backend: out of GPU memory ({e})") from e
        except cp.cuda.compiler.CompileException as e:
            raise BackendError(f"cuda backend: the generated module did not compile: {str(e)[-500:]}") from e
        except Exception as e:                      # noqa: BLE001 - a CUDA runtime or driver error, said whole
            raise BackendError(f"cuda backend: {type(e).__name__}: {e}") from e

    def _pinned(self, regions: list, kind: int) -> tuple[np.ndarray, list]:
        """One pinned host buffer for ``regions`` ([(arena byte offset, nbytes)]): the bytes as
        numpy, and each region's (start, copy: destination, source, nbytes, kind)."""
        cp = self.cp
        starts, total = staging(regions)
        mem = cp.cuda.alloc_pinned_memory(total)
        self._mem = getattr(self, "_mem", []) + [mem]
        host = np.frombuffer(mem, np.uint8, total)
        host[...] = 0                                  # pinned memory starts undefined, as Vulkan's does
        base, copies = self.arena.data.ptr, []
        for (off, n), start in zip(regions, starts):
            gpu, cpu = base + off, mem.ptr + start
            copies.append((gpu, cpu, n, kind) if kind == cp.cuda.runtime.memcpyHostToDevice else (cpu, gpu, n, kind))
        return host, list(zip(starts, copies))

    def _device_pointer(self, host: np.ndarray) -> np.uint64:
        """Where the GPU sees a pinned host buffer (the same address under unified addressing)."""
        ptr = host.ctypes.data
        try:
            return np.uint64(self.cp.cuda.runtime.hostGetDevicePointer(ptr, 0))
        except Exception:                              # noqa: BLE001 - older CuPy: UVA's address is the host's
            return np.uint64(ptr)

    def _capture(self, fns: list, copy_in: list, copy_out: list):
        cp, s = self.cp, self.stream
        memcpy = cp.cuda.runtime.memcpyAsync
        inside = any(f[3] for f in fns)                # the kernel copies for itself: no copy nodes
        host = (self._device_pointer(self.host_in), self._device_pointer(self.host_out))
        s.begin_capture()
        try:
            for _, (dst, src, n, kind) in [] if inside else copy_in:
                memcpy(dst, src, n, kind, s.ptr)
            for fn, blocks, threads, own in fns:
                fn((blocks,), (threads,), (self.arena, self.weights) + (host if own else ()), stream=s)
            for _, (dst, src, n, kind) in [] if inside else copy_out:
                memcpy(dst, src, n, kind, s.ptr)
        finally:
            graph = s.end_capture()
        graph.upload(s)
        s.synchronize()
        return graph

    def launch(self) -> None:
        self.graph.launch(self.stream)
        self.stream.synchronize()
