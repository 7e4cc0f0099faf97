"""The vulkan backend: the whole plan as one command buffer, recorded once and resubmitted per
call. Every step is a compute shader generated from the plan (vulkan/kernels.py); the arena
and the weights are two storage buffers in host-visible memory (device-local where the device
has it: on the SoCs nnos is for, GPU and CPU share it), so the inputs and outputs are views
of the mapped arena — no copies. Asked for by name (``plan.bind("vulkan")``) or measured by
auto against the others (a CPU Vulkan device such as lavapipe only with NNOS_VULKAN_CPU=1).
``NNOS_VULKAN_VALIDATION=1`` turns on the Khronos validation layer with synchronization
validation; its messages are in ``exe.facts["validation"]``.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import flags
from ..errors import BackendError
from .base import Executable
from .vulkan import kernels
from .vulkan.device import Device, best_device, kind_name, vk_module


class VulkanExecutable(Executable):
    backend = "vulkan"

    def __init__(self, plan):
        super().__init__(plan)
        why = kernels.unsupported(plan)
        if why:
            raise BackendError(f"vulkan backend: {why}")
        g, mem = plan.graph, plan.memory
        self.dev = dev = Device(validation=flags.VULKAN_VALIDATION.get())
        blob, woff = kernels.weight_blob(g)
        skip, ref = set(mem.skip), kernels.locate(plan, woff)
        try:
            self.kernels = [kernels.generate(g, node, ref) for s, node in enumerate(g.nodes) if s not in skip]
        except BackendError as e:
            raise BackendError(f"vulkan backend: {e}") from e
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
        self.facts.update(device=dev.name, kind=dev.kind, limits=dev.limits, dispatches=len(pipes), validation=dev.messages)

    def run(self) -> None:
        self._submit()


@functools.lru_cache(maxsize=1)
def _device_kind() -> tuple[str | None, str]:
    """(why Vulkan cannot run here or None, the best device's type), asked once a process."""
    try:
        vk = vk_module()
        inst = vk.vkCreateInstance(vk.VkInstanceCreateInfo(), None)
        try:
            devices = vk.vkEnumeratePhysicalDevices(inst)
            if not devices:
                return "vulkan backend: the Vulkan loader found no device", ""
            return None, kind_name(vk, best_device(vk, devices))
        finally:
            vk.vkDestroyInstance(inst, None)
    except BackendError as e:
        return str(e), ""
    except Exception as e:                         # noqa: BLE001 - a broken driver is "not here"
        return f"vulkan backend: Vulkan did not start: {type(e).__name__}: {e}", ""


def available() -> str | None:
    return _device_kind()[0]


def left_out_of_auto() -> str | None:
    """Why auto does not measure it here: not available, or its only device is the CPU itself
    (Mesa's lavapipe: the cpu backend runs the same plan on the same cores without the detour)."""
    why, kind = _device_kind()
    if why or kind != "cpu" or flags.VULKAN_CPU.get():
        return why
    return "vulkan backend: the only Vulkan device is a CPU implementation (lavapipe); auto leaves plans to the " \
           "cpu backend (NNOS_VULKAN_CPU=1 measures it too)"


def covers(plan) -> str | None:
    return kernels.unsupported(plan)


def prepare(plan) -> VulkanExecutable:
    return VulkanExecutable(plan)
