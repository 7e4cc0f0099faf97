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
from .vulkan.device import Device, best_device, buffer_size, kind_name, vk_module


class VulkanExecutable(Executable):
    backend = "vulkan"

    def __init__(self, plan):
        super().__init__(plan)
        why = kernels.unsupported(plan)
        if why:
            raise BackendError(f"vulkan backend: {why}")
        g, mem = plan.graph, plan.memory
        self.dev = dev = Device(validation=flags.VULKAN_VALIDATION.get())
        self.kernels, blob = kernels.plan_kernels(plan)
        kernels.check_limits(self.kernels, dev.limits, {"arena": mem.arena_bytes, "weights": blob.nbytes})
        staged = flags.VULKAN_STAGING.get() or not dev.shares_memory()
        # the arena starts zeroed (Vulkan memory starts undefined: a freed device's bytes, NaNs)
        self._arena = self._upload(np.zeros(mem.arena_bytes, np.uint8)) if staged else dev.buffer(mem.arena_bytes)
        self._weights = self._upload(blob) if staged else dev.buffer(blob.nbytes)
        if not staged:
            self._arena[2][...] = 0
            self._weights[2][:blob.nbytes] = blob.view(np.uint8)
        dev.use_pipeline_cache(kernels.cache_dir())
        own = plan.kernels.get("vulkan")
        self.pipes = pipes = [(dev.pipeline(kernels.spirv(k.source, own)), k.groups) for k in self.kernels]
        dev.save_pipeline_cache()
        self.ds = dev.bind([(self._arena[0], buffer_size(mem.arena_bytes)), (self._weights[0], buffer_size(blob.nbytes))])
        if staged:                          # a discrete GPU's own memory: the copies are in the command buffer
            host, copy_in, copy_out = self._staging()
            cb = dev.record(pipes, self.ds, copy_in=copy_in, copy_out=copy_out)
        else:                               # shared memory: the inputs and outputs are views of the arena
            host, cb = self._arena[2], dev.record(pipes, self.ds) if pipes else None
        self._submit = dev.submitter(cb) if cb is not None else (lambda: None)
        self.inputs = {n: self._view(host, self._at[n] if staged else mem.tensors[n], n) for n in g.inputs}
        self.outputs = {}
        for n in g.outputs:
            v = self._view(host, self._at[n] if staged else mem.tensors[n], n).view()
            v.flags.writeable = False
            self.outputs[n] = v
        self.facts.update(device=dev.name, kind=dev.kind, limits=dev.limits, dispatches=len(pipes),
                          validation=dev.messages, staged=staged,
                          spirv="the plan's own" if own and all(kernels.source_key(k.source) in own for k in self.kernels)
                          else "compiled on this device")

    def _view(self, host: np.ndarray, offset: int, name: str) -> np.ndarray:
        t = self.plan.graph.types[name]
        return host[offset:offset + t.nbytes].view(t.dtype).reshape(t.shape)

    def _upload(self, blob: np.ndarray):
        """``blob``'s bytes in a new device-local buffer, through a staging buffer, once."""
        dev, data = self.dev, blob.view(np.uint8).reshape(-1)
        target, stage = dev.buffer(data.nbytes, "device"), dev.buffer(data.nbytes, "host")
        stage[2][...] = 0
        stage[2][:data.nbytes] = data
        dev.copy_now(stage[0], target[0], [(0, 0, stage[2].nbytes)])
        return target

    def _staging(self):
        """One host buffer for the inputs and outputs (each 256-byte aligned), and the copies
        between it and the arena: (its bytes, copy in, copy out)."""
        g, mem = self.plan.graph, self.plan.memory
        self._at, total = {}, 0
        for n in list(g.inputs) + [o for o in g.outputs if o not in g.inputs]:
            self._at[n] = total
            total += (g.types[n].nbytes + 255) // 256 * 256
        stage = self.dev.buffer(max(total, 256), "host")
        stage[2][...] = 0
        arena = self._arena[0]
        copy_in = (stage[0], arena, [(self._at[n], mem.tensors[n], g.types[n].nbytes) for n in g.inputs])
        copy_out = (arena, stage[0], [(mem.tensors[n], self._at[n], g.types[n].nbytes) for n in g.outputs])
        return stage[2], copy_in, copy_out

    def run(self) -> None:
        self._submit()


@functools.lru_cache(maxsize=1)
def _device_kind() -> tuple[str | None, str]:
    """(why Vulkan cannot run here or None, the best device's type), asked once a process."""
    try:
        vk = vk_module()
        inst = vk.vkCreateInstance(vk.VkInstanceCreateInfo(), None)     # a look only: its driver threads go with it
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
