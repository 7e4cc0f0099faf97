"""The vulkan backend on Mesa's lavapipe (a conformant CPU Vulkan driver) with the Khronos
validation layer on (synchronization validation requested): every ONNX node case whose plan
it claims, and the bundled models, against the numpy reference; any validation message
fails; repeated calls are bitwise identical; a plan it does not cover is refused by name.
./build.sh installs lavapipe, the layer, glslang and the `vulkan` package."""
from __future__ import annotations

import os

import numpy as np
import pytest

import nnos
from nnos.backends import ops_vulkan
from nnos.errors import BackendError
from tests.support.gpu_cases import CLAIMED, MODELS
from tests.support.onnx_cases import case_runs, const_slots
from tests.support.paths import ROOT

WHY = ops_vulkan.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no Vulkan here: {WHY}")


@pytest.fixture(autouse=True)
def validation(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("NNOS_VULKAN_VALIDATION", "1")
    monkeypatch.setenv("NNOS_VULKAN_CACHE", str(tmp_path_factory.getbasetemp() / "vulkan-cache"))


RUN = CLAIMED


def _run(plan, feeds):
    exe = ops_vulkan.prepare(plan)
    for k, v in feeds.items():
        exe.inputs[k][...] = v
    exe.run()
    assert exe.facts["validation"] == [], exe.facts["validation"][:3]
    return exe


@pytest.mark.parametrize("case", RUN, ids=[c.name for c in RUN])
def test_node_case_on_vulkan(case, tmp_path):
    path = os.path.join(tmp_path, "model.onnx")
    ran = 0
    for plan, feeds, _, _ in case_runs(case, path, const_slots(case)):
        if ops_vulkan.covers(plan):                  # e.g. a float64 or integer case: not claimed
            continue
        want = plan(feeds)
        exe = _run(plan, feeds)
        for name, ref in want.items():
            np.testing.assert_allclose(exe.outputs[name], ref, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(ref).max())),
                                       err_msg=name)
        ran += 1
    if not ran:
        pytest.skip("no float32 data set in this case")


@pytest.mark.parametrize("model", MODELS, ids=os.path.basename)
def test_bundled_models_match_the_reference_and_repeat_bitwise(model):
    plan = nnos.compile(model)
    exe = plan.bind("vulkan")                        # through the backend interface: verified against numpy
    assert exe.backend == "vulkan" and exe.facts["dispatches"] == len(plan.graph.nodes) - len(plan.memory.skip)
    ref = plan.bind("numpy")
    rng = np.random.default_rng(1)
    for _ in range(3):
        for k, v in exe.inputs.items():
            x = rng.standard_normal(v.shape).astype(v.dtype)
            v[...] = x
            ref.inputs[k][...] = x
        exe.run()
        ref.run()
        first = {k: v.copy() for k, v in exe.outputs.items()}
        for _ in range(3):
            exe.run()
            for k, v in exe.outputs.items():
                assert np.array_equal(v, first[k]), "the same inputs, the same bits"
        for k in first:
            np.testing.assert_allclose(first[k], ref.outputs[k], rtol=1e-4, atol=1e-5)
    assert exe.facts["validation"] == []
    assert exe.facts["limits"]["max_storage_buffers_per_stage"] >= 2
    assert isinstance(exe.facts["limits"]["float16"], bool) and isinstance(exe.facts["limits"]["int8"], bool)


def test_a_plan_it_does_not_cover_is_refused_by_name(tmp_path):
    from onnx import helper
    from tests.support.onnx_models import model, rand, save, vi
    m = model([helper.make_node("Conv", ["x", "w"], ["y"])], [vi("x", [1, 2, 5])], [vi("y", [1, 3, 3])],
              [("w", rand(3, 2, 3))])                        # one spatial dimension: not yet
    plan = nnos.compile(save(m, str(tmp_path / "conv.onnx")))
    why = ops_vulkan.covers(plan)
    assert why == "no kernel for Conv over 1 spatial dimensions (Conv_0); two only", why
    with pytest.raises(BackendError, match="vulkan backend: no kernel for Conv"):
        plan.bind("vulkan")
    assert plan.bind("auto").backend != "vulkan"


def test_gpu_check_reports_the_device_runs_the_vectors_and_times_replays():
    import json
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "nnos.cli", "gpu-check", "--calls", "300", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["available"] and got["device"] and got["limits"]["max_workgroup_invocations"] >= 64
    assert [v["model"] for v in got["vectors"]][:1] == ["cartpole.onnx"] and all(v["ok"] for v in got["vectors"])
    assert got["calls"] == 300 and 0 < got["floor_us"]["p50"] <= got["floor_us"]["p99"] <= got["floor_us"]["max"]
    assert got["replay_us"]["p50"] > 0


def test_a_plan_over_the_devices_limits_is_refused_naming_the_limit():
    from nnos.backends.vulkan.kernels import Kernel, check_limits
    exe = ops_vulkan.prepare(nnos.compile(MODELS[0]))
    limits = dict(exe.dev.limits)
    check_limits(exe.kernels, limits, {"arena": 1024, "weights": 1024})              # fits
    small = dict(limits, max_workgroup_count_x=2)                                    # a tiny GPU
    big = Kernel("big_step", "", 64 * 3)
    with pytest.raises(BackendError, match="step big_step needs 3 workgroups; this device's max_workgroup_count_x is 2"):
        check_limits([big], small, {})
    with pytest.raises(BackendError, match="the arena takes 4096 bytes; this device's max_storage_buffer_range is 1024"):
        check_limits([], dict(limits, max_storage_buffer_range=1024), {"arena": 4096})
    with pytest.raises(BackendError, match="the shaders need max_workgroup_invocations ≥ 64; this device has 32"):
        check_limits([], dict(limits, max_workgroup_invocations=32), {})


def test_a_dropped_executable_frees_its_device_but_never_under_a_live_view():
    """Each bind makes a Vulkan device (lavapipe: worker threads); a dropped executable gives it
    back — but not while one of its output views is still held (reading it stays safe)."""
    import gc
    plan = nnos.compile(MODELS[0])
    threads = lambda: len(os.listdir("/proc/self/task"))                      # noqa: E731
    gc.collect()
    exe = ops_vulkan.prepare(plan)
    exe.run()
    one = threads()
    del exe
    gc.collect()
    for _ in range(8):
        exe = ops_vulkan.prepare(plan)
        exe.inputs["obs"][...] = 0.5
        exe.run()
        kept = exe.outputs["action"]
        want = kept.copy()
        del exe
        gc.collect()
        assert np.array_equal(kept, want), "a view outlives its executable"
        del kept
        gc.collect()
    assert threads() <= one, f"{threads()} threads after 8 binds dropped; {one} with one device"


def test_a_plan_compiled_with_its_spirv_binds_where_there_is_no_shader_compiler(tmp_path, monkeypatch):
    """``nnos compile --kernels vulkan``: the SPIR-V is generated by nnos from the plan and kept
    in the plan file; a device binding that file needs neither glslang nor a cache. A plan
    without it, on the same device, says what is missing; a damaged module is refused by name."""
    from nnos.backends.vulkan import kernels
    from nnos.plan import Plan
    plan = nnos.compile(MODELS[1])
    assert kernels.embed(plan) == len(plan.graph.nodes) - len(plan.memory.skip)
    data = plan.to_bytes()
    monkeypatch.setenv("NNOS_VULKAN_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path))                 # no glslangValidator to be found
    kernels._cache.clear()                                   # as a new process on a bare device
    own = ops_vulkan.prepare(Plan.from_bytes(data))
    for buf in own.inputs.values():
        buf[...] = 0.25
    own.run()
    assert own.facts["spirv"] == "the plan's own" and own.facts["validation"] == []
    ref = plan.bind("numpy")
    for buf in ref.inputs.values():
        buf[...] = 0.25
    ref.run()
    for name, want in ref.outputs.items():
        np.testing.assert_allclose(own.outputs[name], want, rtol=1e-4, atol=1e-5)
    assert not os.path.exists(tmp_path / "empty" / "spv"), "a shader was compiled"
    with pytest.raises(BackendError, match="glslangValidator is not installed"):
        ops_vulkan.prepare(nnos.compile(MODELS[1]))          # the same model without its SPIR-V
    torn = Plan.from_bytes(data)
    key = next(iter(torn.kernels["vulkan"]))
    torn.kernels["vulkan"][key] = b"\x00" * 24
    with pytest.raises(BackendError, match=f"SPIR-V for {key[:12]} is not a SPIR-V module"):
        ops_vulkan.prepare(Plan.from_bytes(torn.to_bytes()))


def test_a_process_binds_again_and_again_on_one_instance():
    """Regression (H200): NVIDIA's driver refuses vkCreateInstance after 30 in a process, destroyed
    or not, and a loop binds at every activation, shadow and measurement — every device of a
    process shares one instance, and 40 in a row bind."""
    from nnos.backends.vulkan.device import Device
    first = Device(validation=True)
    for _ in range(40):
        dev = Device(validation=True)
        assert dev.instance is first.instance
        dev.close()
    assert Device().instance is not first.instance            # the one without the layer


def test_a_second_bind_needs_no_shader_compiler_and_reuses_the_pipeline_cache(tmp_path, monkeypatch):
    from nnos.backends.vulkan import kernels
    monkeypatch.setenv("NNOS_VULKAN_CACHE", str(tmp_path))
    kernels._cache.clear()                                   # as a new process: nothing compiled yet
    plan = nnos.compile(MODELS[1])
    ops_vulkan.prepare(plan).run()
    caches = [n for n in os.listdir(tmp_path) if n.startswith("pipelines-")]
    assert len(caches) == 1 and os.path.getsize(tmp_path / caches[0]) > 0
    assert len(os.listdir(tmp_path / "spv")) == len(plan.graph.nodes) - len(plan.memory.skip)
    kernels._cache.clear()                                   # a new process: only the disk remains

    def no_compiler(source):
        raise AssertionError("glslang was run for a shader already in the cache")
    monkeypatch.setattr(kernels, "_glslang", no_compiler)
    exe = ops_vulkan.prepare(plan)
    exe.run()                        # its inputs as bound: zeros (regression: undefined memory, NaNs in CI)
    assert all(np.isfinite(v).all() for v in exe.outputs.values())
    assert exe.facts["validation"] == []
    (tmp_path / caches[0]).write_bytes(b"\x00" * 64)          # a torn or foreign pipeline cache: dropped
    for spv in (tmp_path / "spv").iterdir():
        spv.write_bytes(spv.read_bytes()[:8])                    # torn SPIR-V files: compiled again
    monkeypatch.undo()
    monkeypatch.setenv("NNOS_VULKAN_CACHE", str(tmp_path))
    kernels._cache.clear()
    again = ops_vulkan.prepare(plan)
    again.run()
    np.testing.assert_array_equal(again.outputs["actions"], exe.outputs["actions"])


def test_each_devices_validation_messages_are_its_own():
    """The vulkan package keeps one callback for the whole process; a message still reaches the
    device that made it, not the newest one."""
    plan = nnos.compile(MODELS[0])
    first, second = ops_vulkan.prepare(plan), ops_vulkan.prepare(plan)
    dev = first.dev
    vk = dev.vk
    # a buffer for no use: invalid, and harmless on a real driver (a dispatch with no pipeline
    # bound, tried first, crashed NVIDIA's driver: the layer reports, it does not stop the call)
    buf = vk.vkCreateBuffer(dev.device, vk.VkBufferCreateInfo(size=64, usage=0, sharingMode=vk.VK_SHARING_MODE_EXCLUSIVE),
                            None)
    vk.vkDestroyBuffer(dev.device, buf, None)
    assert any("VkBufferCreateInfo-usage" in m for m in first.facts["validation"]), first.facts["validation"]
    assert second.facts["validation"] == []


def test_synchronization_validation_is_on():
    """The layer's synchronization validation runs (VK_EXT_validation_features): two writes to
    the arena with no barrier between them are reported as a hazard. (Layer 1.3.239 does not
    report hazards between dispatches through one whole-arena descriptor — a plan recorded
    without its barriers passes it — so the barriers are also checked by the recorder's own
    test below, not by the layer alone.)"""
    exe = ops_vulkan.prepare(nnos.compile(MODELS[0]))
    dev, vk = exe.dev, exe.dev.vk
    (cb,) = vk.vkAllocateCommandBuffers(dev.device, vk.VkCommandBufferAllocateInfo(
        commandPool=dev.cmd_pool, level=vk.VK_COMMAND_BUFFER_LEVEL_PRIMARY, commandBufferCount=1))
    vk.vkBeginCommandBuffer(cb, vk.VkCommandBufferBeginInfo())
    vk.vkCmdFillBuffer(cb, exe._arena[0], 0, 64, 0)
    vk.vkCmdFillBuffer(cb, exe._arena[0], 0, 64, 1)
    vk.vkEndCommandBuffer(cb)
    assert [m for m in exe.facts["validation"] if "SYNC-HAZARD-WRITE-AFTER-WRITE" in m], exe.facts["validation"]
    assert not [m for m in exe.facts["validation"] if "VUID" in m], exe.facts["validation"]


def test_the_recorded_plan_has_a_barrier_between_every_two_dispatches(monkeypatch):
    """What the layer does not see here: each dispatch's writes are made available to the next
    (compute → compute, shader write → shader read and write), and the last one's to the host."""
    exe = ops_vulkan.prepare(nnos.compile(MODELS[2]))
    vk, calls = exe.dev.vk, []
    monkeypatch.setattr(vk, "vkCmdDispatch", lambda *a: calls.append("dispatch"))
    monkeypatch.setattr(vk, "vkCmdPipelineBarrier", lambda cb, src, dst, *a: calls.append(
        ("barrier", src, dst, a[2][0].srcAccessMask, a[2][0].dstAccessMask)))
    exe.dev.record(exe.pipes, exe.ds)
    compute, write = vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, vk.VK_ACCESS_SHADER_WRITE_BIT
    between = ("barrier", compute, compute, write, vk.VK_ACCESS_SHADER_READ_BIT | write)
    to_host = ("barrier", compute, vk.VK_PIPELINE_STAGE_HOST_BIT, write, vk.VK_ACCESS_HOST_READ_BIT)
    n = len(exe.pipes)
    assert n >= 3 and calls == ["dispatch", between] * (n - 1) + ["dispatch", to_host], calls


@pytest.mark.parametrize("model", [MODELS[1], MODELS[3]], ids=os.path.basename)
def test_a_discrete_gpus_form_copies_through_a_staging_buffer(model, monkeypatch):
    """Where the GPU's memory is not host-visible (a discrete card without a BAR) the arena and
    the weights live in device-local memory and the command buffer copies the inputs in and the
    outputs out through one staging buffer — forced here on lavapipe, whose memory is shared;
    synchronization validation sees the copies' barriers."""
    monkeypatch.setenv("NNOS_VULKAN_STAGING", "1")
    plan = nnos.compile(model)
    exe = plan.bind("vulkan")                              # verified against numpy through the interface
    assert exe.facts["staged"] and exe._arena[2] is None, "the arena is not mapped"
    monkeypatch.delenv("NNOS_VULKAN_STAGING")
    shared = ops_vulkan.prepare(plan)
    assert not shared.facts["staged"]
    rng = np.random.default_rng(4)
    for k, v in exe.inputs.items():
        v[...] = shared.inputs[k][...] = rng.standard_normal(v.shape).astype(v.dtype)
    exe.run()
    shared.run()
    for k, v in exe.outputs.items():
        assert np.array_equal(v, shared.outputs[k]), "the same kernels, the same bits"
    assert exe.facts["validation"] == [] and shared.facts["validation"] == []
