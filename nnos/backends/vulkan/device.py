"""A Vulkan device for compute, through the `vulkan` package (cffi over the system's loader):
the instance (with the Khronos validation layer and synchronization validation when asked,
every message kept), the first physical device with a compute queue, its limits, host-visible
buffers mapped once, compute pipelines over one descriptor layout (two storage buffers), and
one command buffer recorded once and resubmitted with a reused fence."""
from __future__ import annotations

import ctypes
import os
import weakref

import numpy as np

from ...errors import BackendError


def vk_module():
    try:
        import vulkan as vk
        vk.vkEnumerateInstanceLayerProperties()       # loads the loader: absent → OSError/ProcedureNotFound
    except Exception as e:                            # noqa: BLE001 - any failure to load is "no Vulkan here"
        raise BackendError(f"vulkan backend: no Vulkan loader ({type(e).__name__}: {e}); "
                           "Debian: libvulkan1 and mesa-vulkan-drivers") from e
    return vk


_devices: "weakref.WeakSet[Device]" = weakref.WeakSet()      # live devices, for their messages
_instances: dict[bool, tuple] = {}                 # validation? → (VkInstance, its messenger or None)


def _said(severity, types, data, user) -> int:
    """A validation message, to the device it names (by its VkDevice, queue or command buffer
    handle among the message's objects), else to every live device."""
    import vulkan as vk
    text = vk.ffi.string(data.pMessage).decode(errors="replace")
    handles = {int(data.pObjects[i].objectHandle) for i in range(data.objectCount)}
    live = list(_devices)
    named = [d for d in live if d.handles & handles]
    for dev in named or live:
        dev.messages.append(text)
    return 0


def instance(validation: bool = False):
    """The process's one VkInstance (one with the validation layer, one without), made on first
    use and kept: NVIDIA's driver refuses vkCreateInstance after 30 in a process, destroyed or
    not (VK_ERROR_INCOMPATIBLE_DRIVER, measured on an H200), and a loop binds again at every
    activation, shadow and measurement."""
    if validation not in _instances:
        vk = vk_module()
        app = vk.VkApplicationInfo(pApplicationName="nnos", apiVersion=vk.VK_MAKE_VERSION(1, 1, 0))
        if not validation:
            _instances[False] = (vk.vkCreateInstance(vk.VkInstanceCreateInfo(pApplicationInfo=app), None), None)
        else:
            _instances[True] = _validated(vk, app)
    return _instances[validation][0]


def _validated(vk, app) -> tuple:
    have = [layer.layerName for layer in vk.vkEnumerateInstanceLayerProperties()]
    if "VK_LAYER_KHRONOS_validation" not in have:
        raise BackendError("vulkan backend: validation asked for, but VK_LAYER_KHRONOS_validation is not "
                           "installed (Debian: vulkan-validationlayers)")
    feats = vk.VkValidationFeaturesEXT(
        pEnabledValidationFeatures=[vk.VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT])
    ci = vk.VkInstanceCreateInfo(pApplicationInfo=app, ppEnabledLayerNames=["VK_LAYER_KHRONOS_validation"],
                                 ppEnabledExtensionNames=["VK_EXT_debug_utils", "VK_EXT_validation_features"], pNext=feats)
    inst = vk.vkCreateInstance(ci, None)
    sev = vk.VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | vk.VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT
    kinds = (vk.VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | vk.VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT
             | vk.VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT)
    dbg = vk.VkDebugUtilsMessengerCreateInfoEXT(messageSeverity=sev, messageType=kinds, pfnUserCallback=_said)
    messenger = vk.vkGetInstanceProcAddr(inst, "vkCreateDebugUtilsMessengerEXT")(inst, dbg, None)
    return inst, (messenger, dbg)


KINDS = ("discrete", "integrated", "virtual", "cpu", "other")       # preferred first


def kind_name(vk, phys) -> str:
    t = vk.vkGetPhysicalDeviceProperties(phys).deviceType
    return {vk.VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: "discrete", vk.VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: "integrated",
            vk.VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: "virtual", vk.VK_PHYSICAL_DEVICE_TYPE_CPU: "cpu"}.get(t, "other")


def best_device(vk, devices):
    """A GPU before a CPU implementation (a board with both a GPU driver and lavapipe)."""
    return min(devices, key=lambda d: KINDS.index(kind_name(vk, d)))


def buffer_size(nbytes: int) -> int:
    """What a buffer of ``nbytes`` is made with (16-byte multiples, never empty)."""
    return max(16, (nbytes + 15) // 16 * 16)


class Device:
    def __init__(self, validation: bool = False):
        vk = self.vk = vk_module()
        self.messages: list[str] = []
        self._keep = []                               # cffi objects that must outlive their use
        self._owned = []                              # (destroy function, handle), destroyed in reverse by close()
        self.device = self.pipeline_cache = None
        self.cache_path, self.cache_loaded = None, 0
        self.handles: set[int] = set()               # its VkDevice, queue, command buffers: whose messages
        self.instance = instance(validation)
        devices = vk.vkEnumeratePhysicalDevices(self.instance)
        if not devices:
            raise BackendError("vulkan backend: the loader found no Vulkan device")
        self.phys = best_device(vk, devices)
        self.kind = kind_name(vk, self.phys)
        p = vk.vkGetPhysicalDeviceProperties(self.phys)
        self.name = vk.ffi.string(p.deviceName).decode() if not isinstance(p.deviceName, str) else p.deviceName
        lim = p.limits
        self.limits = {"max_workgroup_invocations": lim.maxComputeWorkGroupInvocations,
                       "max_storage_buffers_per_stage": lim.maxPerStageDescriptorStorageBuffers,
                       "max_storage_buffer_range": lim.maxStorageBufferRange,
                       "max_shared_memory": lim.maxComputeSharedMemorySize,
                       "max_workgroup_count_x": lim.maxComputeWorkGroupCount[0],
                       "max_workgroup_size_x": lim.maxComputeWorkGroupSize[0]}
        self.limits.update(self._narrow_types())
        families = vk.vkGetPhysicalDeviceQueueFamilyProperties(self.phys)
        self.ids = (p.vendorID, p.deviceID, p.driverVersion, bytes(p.pipelineCacheUUID).hex())
        self.family = next((i for i, f in enumerate(families) if f.queueFlags & vk.VK_QUEUE_COMPUTE_BIT), None)
        if self.family is None:
            raise BackendError(f"vulkan backend: {self.name} has no compute queue")
        prio = vk.VkDeviceQueueCreateInfo(queueFamilyIndex=self.family, queueCount=1, pQueuePriorities=[1.0])
        self.device = vk.vkCreateDevice(self.phys, vk.VkDeviceCreateInfo(pQueueCreateInfos=[prio]), None)
        self.queue = vk.vkGetDeviceQueue(self.device, self.family, 0)
        self.handles |= {self._handle(self.device), self._handle(self.queue)}
        _devices.add(self)
        self._layouts()

    def _narrow_types(self) -> dict:
        """Whether shaders can compute in float16 and int8 and keep them in storage buffers
        (Pi 5's v3dv: no float16), read once at bind."""
        vk = self.vk
        f16 = vk.VkPhysicalDeviceShaderFloat16Int8Features()
        s16 = vk.VkPhysicalDevice16BitStorageFeatures(pNext=f16)
        s8 = vk.VkPhysicalDevice8BitStorageFeatures(pNext=s16)
        f2 = vk.VkPhysicalDeviceFeatures2(pNext=s8)
        try:
            vk.vkGetPhysicalDeviceFeatures2(self.phys, f2)
        except Exception:                              # noqa: BLE001 - a Vulkan 1.0 driver: neither
            return {"float16": False, "int8": False}
        return {"float16": bool(f16.shaderFloat16 and s16.storageBuffer16BitAccess),
                "int8": bool(f16.shaderInt8 and s8.storageBuffer8BitAccess)}

    def _handle(self, obj) -> int:
        return int(self.vk.ffi.cast("uintptr_t", obj))

    def _layouts(self) -> None:
        vk = self.vk
        binds = [vk.VkDescriptorSetLayoutBinding(binding=i, descriptorType=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                 descriptorCount=1, stageFlags=vk.VK_SHADER_STAGE_COMPUTE_BIT)
                 for i in range(2)]
        self.set_layout = vk.vkCreateDescriptorSetLayout(
            self.device, vk.VkDescriptorSetLayoutCreateInfo(pBindings=binds), None)
        self.pipeline_layout = vk.vkCreatePipelineLayout(
            self.device, vk.VkPipelineLayoutCreateInfo(pSetLayouts=[self.set_layout]), None)
        size = vk.VkDescriptorPoolSize(type=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount=2)
        self.pool = vk.vkCreateDescriptorPool(self.device, vk.VkDescriptorPoolCreateInfo(maxSets=1, pPoolSizes=[size]), None)
        self.cmd_pool = vk.vkCreateCommandPool(self.device, vk.VkCommandPoolCreateInfo(queueFamilyIndex=self.family), None)
        self._owned += [(vk.vkDestroyDescriptorSetLayout, self.set_layout), (vk.vkDestroyPipelineLayout, self.pipeline_layout),
                        (vk.vkDestroyDescriptorPool, self.pool), (vk.vkDestroyCommandPool, self.cmd_pool)]

    def __del__(self):
        try:
            self.close()
        except Exception:                             # noqa: BLE001 - at interpreter exit the loader may be gone
            pass

    def close(self) -> None:
        """Everything this device made, then the device (a driver's threads with it; the
        process's instance stays). Called when nothing refers to the device any more (its mapped
        arrays refer to it)."""
        vk = self.vk
        if self.device is not None:
            vk.vkDeviceWaitIdle(self.device)
            for destroy, handle in reversed(self._owned):
                destroy(self.device, handle, None)
            vk.vkDestroyDevice(self.device, None)
            self.device, self._owned = None, []
        _devices.discard(self)

    # --- memory ----------------------------------------------------------------------------------
    def buffer(self, nbytes: int, where: str = "shared") -> tuple[object, object, np.ndarray | None]:
        """A storage buffer, mapped once when the host can see it: (buffer, memory, bytes as numpy
        or None). ``where``: "shared" — host-visible and coherent, device-local too where the
        device has such memory (SoCs share it; a discrete GPU's BAR); "device" — device-local,
        not mapped (a discrete GPU's own memory, filled by copies); "host" — host-visible,
        cached where it can be (the staging buffer the copies go through)."""
        vk = self.vk
        nbytes = buffer_size(nbytes)
        if nbytes > self.limits["max_storage_buffer_range"]:
            raise BackendError(f"vulkan backend: a buffer of {nbytes} bytes exceeds this device's storage buffer "
                               f"range ({self.limits['max_storage_buffer_range']} bytes)")
        usage = (vk.VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | vk.VK_BUFFER_USAGE_TRANSFER_SRC_BIT
                 | vk.VK_BUFFER_USAGE_TRANSFER_DST_BIT)
        buf = vk.vkCreateBuffer(self.device, vk.VkBufferCreateInfo(size=nbytes, usage=usage,
                                                                   sharingMode=vk.VK_SHARING_MODE_EXCLUSIVE), None)
        self._owned.append((vk.vkDestroyBuffer, buf))
        req = vk.vkGetBufferMemoryRequirements(self.device, buf)
        mem_type = self.memory_type(req.memoryTypeBits, where)
        try:
            mem = vk.vkAllocateMemory(self.device, vk.VkMemoryAllocateInfo(allocationSize=req.size,
                                                                           memoryTypeIndex=mem_type), None)
        except vk.VkErrorOutOfDeviceMemory as e:
            raise BackendError(f"vulkan backend: out of device memory for {nbytes} bytes") from e
        vk.vkBindBufferMemory(self.device, buf, mem, 0)
        self._owned.append((vk.vkFreeMemory, mem))
        if where == "device":
            return buf, mem, None
        mapped = vk.vkMapMemory(self.device, mem, 0, req.size, 0)
        # the bytes as numpy through a ctypes array that holds this device: any view of them keeps
        # the device (and so the mapping) alive; the device is closed when the last one goes
        raw = (ctypes.c_uint8 * nbytes).from_address(int(vk.ffi.cast("uintptr_t", vk.ffi.from_buffer(mapped))))
        raw.device = self
        return buf, mem, np.frombuffer(raw, np.uint8, nbytes)

    def memory_type(self, bits: int, where: str = "shared") -> int:
        vk = self.vk
        props = vk.vkGetPhysicalDeviceMemoryProperties(self.phys)
        flags = [props.memoryTypes[i].propertyFlags if bits & (1 << i) else 0 for i in range(props.memoryTypeCount)]
        local, cached = vk.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, vk.VK_MEMORY_PROPERTY_HOST_CACHED_BIT
        if where == "device":
            found = [i for i, f in enumerate(flags) if f & local]
            if not found:
                raise BackendError(f"vulkan backend: {self.name} has no device-local memory for storage buffers")
            return found[0]
        want = vk.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | vk.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
        found = [i for i, f in enumerate(flags) if f & want == want]
        if not found:
            raise BackendError(f"vulkan backend: {self.name} has no host-visible coherent memory for storage buffers")
        prefer = [i for i in found if flags[i] & (local if where == "shared" else cached)]
        return (prefer or found)[0]

    def shares_memory(self) -> bool:
        """Whether the GPU's own memory is host-visible (an SoC's, or a discrete GPU's BAR): the
        inputs and outputs can then be views of the arena, with no copies."""
        vk = self.vk
        props = vk.vkGetPhysicalDeviceMemoryProperties(self.phys)
        want = (vk.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | vk.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT
                | vk.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)
        return any(props.memoryTypes[i].propertyFlags & want == want for i in range(props.memoryTypeCount))

    def copy_now(self, src, dst, regions: list) -> None:
        """Copies between buffers, submitted and waited for (the weights' one upload)."""
        self.submitter(self.record([], None, copy_in=(src, dst, regions)))()

    def bind(self, buffers: list) -> object:
        """The one descriptor set: binding i → buffers[i] (whole, by its size)."""
        vk = self.vk
        (ds,) = vk.vkAllocateDescriptorSets(self.device, vk.VkDescriptorSetAllocateInfo(
            descriptorPool=self.pool, pSetLayouts=[self.set_layout]))
        infos = [vk.VkDescriptorBufferInfo(buffer=b, offset=0, range=n) for b, n in buffers]
        writes = [vk.VkWriteDescriptorSet(dstSet=ds, dstBinding=i, descriptorCount=1,
                                          descriptorType=vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, pBufferInfo=[info])
                  for i, info in enumerate(infos)]
        vk.vkUpdateDescriptorSets(self.device, len(writes), writes, 0, None)
        return ds

    # --- pipelines and the command buffer ---------------------------------------------------------
    def use_pipeline_cache(self, directory: str) -> None:
        """The driver's pipeline cache for this device and driver, from ``directory`` (a boot
        does not rebuild what the last one built); data the driver does not accept is dropped."""
        vk = self.vk
        vendor, device, driver, uuid = self.ids
        self.cache_path = os.path.join(directory, f"pipelines-{vendor:04x}-{device:04x}-{driver:x}-{uuid}.bin")
        try:
            with open(self.cache_path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        try:
            blob = vk.ffi.from_buffer(data)
            info = vk.VkPipelineCacheCreateInfo(initialDataSize=len(data), pInitialData=blob) if data else \
                vk.VkPipelineCacheCreateInfo()
            self.pipeline_cache = vk.vkCreatePipelineCache(self.device, info, None)
            self.cache_loaded = len(data)
        except vk.VkError:
            self.pipeline_cache = vk.vkCreatePipelineCache(self.device, vk.VkPipelineCacheCreateInfo(), None)
        self._owned.append((vk.vkDestroyPipelineCache, self.pipeline_cache))

    def save_pipeline_cache(self) -> int:
        """The pipeline cache back to its file when it grew (atomically); its size in bytes."""
        vk, ffi = self.vk, self.vk.ffi
        if self.pipeline_cache is None:
            return 0
        size = ffi.new("size_t*")
        vk.lib.vkGetPipelineCacheData(self.device, self.pipeline_cache, size, ffi.NULL)
        buf = ffi.new("char[]", size[0])
        if vk.lib.vkGetPipelineCacheData(self.device, self.pipeline_cache, size, buf) != vk.VK_SUCCESS:
            return 0
        if size[0] > self.cache_loaded:
            from ...fsutil import atomic_write
            try:
                os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
                atomic_write(self.cache_path, bytes(ffi.buffer(buf, size[0])))
                self.cache_loaded = size[0]
            except OSError:
                pass                                  # a read-only or full data partition: rebuilt next boot
        return size[0]

    def pipeline(self, spirv: bytes) -> object:
        vk = self.vk
        module = vk.vkCreateShaderModule(self.device, vk.VkShaderModuleCreateInfo(codeSize=len(spirv), pCode=spirv), None)
        stage = vk.VkPipelineShaderStageCreateInfo(stage=vk.VK_SHADER_STAGE_COMPUTE_BIT, module=module, pName="main")
        ci = vk.VkComputePipelineCreateInfo(stage=stage, layout=self.pipeline_layout)
        try:
            (p,) = vk.vkCreateComputePipelines(self.device, self.pipeline_cache, 1, [ci], None)
        except vk.VkError as e:
            raise BackendError(f"vulkan backend: the driver could not create a pipeline ({type(e).__name__})") from e
        finally:
            vk.vkDestroyShaderModule(self.device, module, None)
        self._owned.append((vk.vkDestroyPipeline, p))
        return p

    def record(self, steps: list[tuple[object, int]], ds, barriers: bool = True, copy_in=None, copy_out=None) -> object:
        """One command buffer: ``copy_in`` (src, dst, [(src offset, dst offset, size)]) first,
        each (pipeline, workgroups) dispatched in order with a barrier after each (its writes
        before the next reads), ``copy_out`` after them, the last writes made visible to the
        host. (``barriers=False`` only for the test that looks for them.)"""
        vk = self.vk
        (cb,) = vk.vkAllocateCommandBuffers(self.device, vk.VkCommandBufferAllocateInfo(
            commandPool=self.cmd_pool, level=vk.VK_COMMAND_BUFFER_LEVEL_PRIMARY, commandBufferCount=1))
        vk.vkBeginCommandBuffer(cb, vk.VkCommandBufferBeginInfo())
        compute, transfer = vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, vk.VK_PIPELINE_STAGE_TRANSFER_BIT
        write, read = vk.VK_ACCESS_SHADER_WRITE_BIT, vk.VK_ACCESS_SHADER_READ_BIT
        last = compute, write                                 # the stage and access the host waits on

        def barrier(src, dst, src_access, dst_access):
            vk.vkCmdPipelineBarrier(cb, src, dst, 0, 1, [vk.VkMemoryBarrier(srcAccessMask=src_access,
                                                                            dstAccessMask=dst_access)], 0, None, 0, None)
        if copy_in:
            self._copy(cb, *copy_in)
            barrier(transfer, compute if steps else transfer, vk.VK_ACCESS_TRANSFER_WRITE_BIT,
                    read | write if steps else vk.VK_ACCESS_TRANSFER_READ_BIT)
            last = transfer, vk.VK_ACCESS_TRANSFER_WRITE_BIT
        for i, (pipe, groups) in enumerate(steps):
            vk.vkCmdBindPipeline(cb, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipe)
            vk.vkCmdBindDescriptorSets(cb, vk.VK_PIPELINE_BIND_POINT_COMPUTE, self.pipeline_layout, 0, 1, [ds], 0, None)
            vk.vkCmdDispatch(cb, groups, 1, 1)
            if i < len(steps) - 1 and barriers:
                barrier(compute, compute, write, read | write)
            last = compute, write
        if copy_out:
            barrier(last[0], transfer, last[1], vk.VK_ACCESS_TRANSFER_READ_BIT)
            self._copy(cb, *copy_out)
            last = transfer, vk.VK_ACCESS_TRANSFER_WRITE_BIT
        barrier(last[0], vk.VK_PIPELINE_STAGE_HOST_BIT, last[1], vk.VK_ACCESS_HOST_READ_BIT)
        vk.vkEndCommandBuffer(cb)
        self.handles.add(self._handle(cb))
        return cb

    def _copy(self, cb, src, dst, regions: list) -> None:
        vk = self.vk
        if regions:
            vk.vkCmdCopyBuffer(cb, src, dst, len(regions), [vk.VkBufferCopy(srcOffset=a, dstOffset=b, size=n)
                                                            for a, b, n in regions])

    def submitter(self, cb):
        """A function that submits ``cb`` and waits for it: its submit structure, fence and the
        arrays the calls take built once, the loader's functions called directly (the package's
        wrappers convert their arguments on every call: ~50 µs a call here)."""
        vk, lib = self.vk, self.vk.lib
        fence = vk.vkCreateFence(self.device, vk.VkFenceCreateInfo(), None)
        self._owned.append((vk.vkDestroyFence, fence))
        submit = vk.VkSubmitInfo(pCommandBuffers=[cb])
        submits = vk.ffi.new("VkSubmitInfo[1]", [submit])
        fences = vk.ffi.new("VkFence[1]", [fence])
        self._keep += [submit, submits, fences, fence]
        device, queue, ok, lost = self.device, self.queue, vk.VK_SUCCESS, vk.VK_ERROR_DEVICE_LOST

        def run():
            r = lib.vkQueueSubmit(queue, 1, submits, fence)
            if r == ok:
                r = lib.vkWaitForFences(device, 1, fences, 1, 10_000_000_000)
            if r != ok:
                why = "the device was lost mid-run" if r == lost else f"a submit or its wait failed (VkResult {r})"
                raise BackendError(f"vulkan backend: {why}")
            lib.vkResetFences(device, 1, fences)
        return run
