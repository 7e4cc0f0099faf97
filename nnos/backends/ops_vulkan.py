"""The vulkan backend: the whole plan as one command buffer, recorded once and resubmitted per
call. Every step is a compute shader generated from the plan (vulkan/kernels.py); the arena
and the weights are two storage buffers in host-visible memory (device-local where the device
has it: on the SoCs nnos is for, GPU and CPU share it), so the inputs and outputs are views
of the mapped arena — no copies. Asked for by name (``plan.bind("vulkan")``); auto does not
choose it yet (the measured choice is issue 19's next step).
``NNOS_VULKAN_VALIDATION=1`` turns on the Khronos validation layer with synchronization
validation; its messages are in ``exe.facts["validation"]``.
"""
from __future__ import annotations

import numpy as np

from .. import flags
from ..errors import BackendError
from .base import Executable
from .vulkan import kernels
from .vulkan.device import Device, vk_module

WEIGHT_ALIGN = 16               # floats


def _weights(graph) -> tuple[np.ndarray, dict[str, int]]:
    """Every float32 constant in one array, each at an aligned offset (in floats); the others
    (Gather's indices, shapes, axes) are baked into the shaders."""
    offsets, total = {}, 0
    consts = {n: c for n, c in graph.consts.items() if c.dtype == np.float32}
    for name, c in consts.items():
        offsets[name] = total
        total += (c.size + WEIGHT_ALIGN - 1) // WEIGHT_ALIGN * WEIGHT_ALIGN
    blob = np.zeros(max(total, WEIGHT_ALIGN), np.float32)
    for name, c in consts.items():
        blob[offsets[name]:offsets[name] + c.size] = c.reshape(-1)
    return blob, offsets


class VulkanExecutable(Executable):
    backend = "vulkan"

    def __init__(self, plan):
        super().__init__(plan)
        why = kernels.unsupported(plan)
        if why:
            raise BackendError(f"vulkan backend: {why}")
        g, mem = plan.graph, plan.memory
        self.dev = dev = Device(validation=flags.VULKAN_VALIDATION.get())
        blob, woff = _weights(g)
        skip = set(mem.skip)
        self.kernels = [kernels.generate(g, node, self._ref(woff)) for s, node in enumerate(g.nodes) if s not in skip]
        kernels.check_limits(self.kernels, dev.limits, {"arena": mem.arena_bytes, "weights": blob.nbytes})
        self._arena = dev.buffer(mem.arena_bytes)
        self._weights = dev.buffer(blob.nbytes)
        self._weights[2][:blob.nbytes] = blob.view(np.uint8)
        arena = self._arena[2]
        dev.use_pipeline_cache(kernels.cache_dir())
        self.pipes = pipes = [(dev.pipeline(kernels.spirv(k.source)), k.groups) for k in self.kernels]
        dev.save_pipeline_cache()
        self.ds = dev.bind([(self._arena[0], self._arena[2].nbytes), (self._weights[0], self._weights[2].nbytes)])
        self._submit = dev.submitter(dev.record(pipes, self.ds)) if pipes else (lambda: None)

        def view(name):
            t = g.types[name]
            off = mem.tensors[name]
            return arena[off:off + t.nbytes].view(t.dtype).reshape(t.shape)
        self.inputs = {n: view(n) for n in g.inputs}
        self.outputs = {}
        for n in g.outputs:
            v = view(n).view()
            v.flags.writeable = False
            self.outputs[n] = v
        self.facts.update(device=dev.name, limits=dev.limits, dispatches=len(pipes), validation=dev.messages)

    def _ref(self, woff: dict):
        """Where a tensor lives for the shaders: ("weights" | "arena", offset in floats)."""
        tensors = self.plan.memory.tensors

        def ref(name: str) -> tuple[str, int]:
            if name in woff:
                return "weights", woff[name]
            if tensors[name] % 4:
                raise BackendError(f"vulkan backend: tensor {name} is not 4-byte aligned in the arena")
            return "arena", tensors[name] // 4
        return ref

    def run(self) -> None:
        self._submit()





def available() -> str | None:
    try:
        vk = vk_module()
        inst = vk.vkCreateInstance(vk.VkInstanceCreateInfo(), None)
        try:
            if not vk.vkEnumeratePhysicalDevices(inst):
                return "the Vulkan loader found no device"
        finally:
            vk.vkDestroyInstance(inst, None)
    except BackendError as e:
        return str(e)
    except Exception as e:                         # noqa: BLE001 - a broken driver is "not here"
        return f"Vulkan did not start: {type(e).__name__}: {e}"
    return None


def covers(plan) -> str | None:
    return kernels.unsupported(plan)


def prepare(plan) -> VulkanExecutable:
    return VulkanExecutable(plan)
