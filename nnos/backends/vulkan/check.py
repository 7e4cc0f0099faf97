"""What a user runs on a new board (`nnos gpu-check`): the Vulkan device, its driver and limits,
the bundled test vectors on it against the numpy reference, and the per-call cost of a replayed
plan next to the submit + fence floor — the figures a run on real hardware records in
benchmarks/RESULTS.md."""
from __future__ import annotations

import glob
import os
import time

import numpy as np

from ...errors import BackendError
from ...timing import percentiles


def describe() -> dict:
    """The device and driver, or why there is none (no timing: cheap enough for /v1/status)."""
    from .. import ops_vulkan
    why = ops_vulkan.available()
    if why:
        return {"available": False, "why": why}
    from .device import Device
    dev = Device()
    vk = dev.vk
    p = vk.vkGetPhysicalDeviceProperties(dev.phys)
    api = p.apiVersion
    return {"available": True, "device": dev.name, "api": f"{api >> 22}.{(api >> 12) & 0x3FF}.{api & 0xFFF}",
            "driver_version": int(p.driverVersion), "vendor_id": int(p.vendorID), "limits": dev.limits}


def vectors() -> list[str]:
    """The models the package ships (the image's cart-pole policy; the zoo's where present)."""
    import nnos_models
    root = os.path.dirname(nnos_models.__file__)
    return sorted(glob.glob(os.path.join(root, "cartpole", "*.onnx")) + glob.glob(os.path.join(root, "zoo", "mlp_*.onnx")))


def _timed(run, calls: int) -> dict:
    t = np.empty(calls, np.int64)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        run()
        t[i] = time.perf_counter_ns() - t0
    us = t / 1000.0
    return {**{k: round(v, 1) for k, v in percentiles(us, (50, 99)).items()}, "max": round(float(us.max()), 1)}


def run_check(plans: dict, calls: int = 10_000) -> dict:
    """describe() + each test vector's (``plans``: name → Plan, compiled from vectors()) largest
    difference from the reference over 10 random inputs, and ``calls`` replays of the first
    vector and of an empty command buffer."""
    from .. import ops_vulkan
    out = describe()
    if not out["available"]:
        return out
    out["vectors"], exe = [], None
    rng = np.random.default_rng(0)
    for path, plan in plans.items():
        try:
            exe_v = ops_vulkan.prepare(plan)
        except BackendError as e:
            out["vectors"].append({"model": os.path.basename(path), "ok": False, "why": str(e)})
            continue
        ref, worst = plan.bind("numpy"), 0.0
        for _ in range(10):
            for k, v in exe_v.inputs.items():
                v[...] = ref.inputs[k][...] = rng.standard_normal(v.shape).astype(v.dtype)
            exe_v.run()
            ref.run()
            worst = max(worst, max(float(np.abs(exe_v.outputs[k] - ref.outputs[k]).max()) for k in ref.outputs))
        out["vectors"].append({"model": os.path.basename(path), "ok": worst <= 1e-4, "max_abs_diff": worst})
        exe = exe or exe_v
    if exe is not None:
        out["replay_us"] = _timed(exe.run, calls)
        out["floor_us"] = _timed(exe.dev.submitter(exe.dev.record([], exe.ds)), calls)
        out["calls"] = calls
    return out
