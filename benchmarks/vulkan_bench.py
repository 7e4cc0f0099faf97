"""The vulkan backend's per-call cost on this machine's Vulkan device (lavapipe here), in one run,
interleaved: the floor (an empty command buffer: submit + fence), the plan replayed (recorded
once, resubmitted: what the backend does), one submit + fence wait per layer, and the whole plan
re-recorded every call. Inputs written into the mapped arena, outputs read from it.

    python benchmarks/vulkan_bench.py [--rounds 10] [--calls 200]

Targets (issue 19): replay ≤ 1.5× (the floor + the kernels' own time); replay ≥ 2× faster than
per-layer submits. The kernels' own time is estimated as replay − floor, so the first target is
read as the replay's overhead over one submit: replay / (floor + (per-layer − n·floor)/1) is
printed beside it. Absolute GPU times are recorded only from real GPUs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import nnos  # noqa: E402
from nnos.backends import ops_vulkan  # noqa: E402
from nnos.timing import percentiles  # noqa: E402

MODELS = {"cartpole": "models/cartpole/cartpole.onnx", "mlp_s": "models/zoo/mlp_s.onnx"}


def forms(exe) -> dict:
    """name → a function that runs the plan (or nothing, for the floor) once."""
    dev = exe.dev
    floor = dev.submitter(dev.record([], exe.ds))
    layers = [dev.submitter(dev.record([p], exe.ds)) for p in exe.pipes]

    def per_layer():
        for run in layers:
            run()

    def re_record():
        cb = dev.record(exe.pipes, exe.ds)
        dev.submitter(cb)()
        dev.vk.vkFreeCommandBuffers(dev.device, dev.cmd_pool, 1, [cb])
    return {"floor": floor, "replay": exe.run, "per-layer submits": per_layer, "re-recorded": re_record}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=200)
    a = ap.parse_args()
    why = ops_vulkan.available()
    if why:
        sys.exit(f"no Vulkan here: {why}")
    for name, path in MODELS.items():
        exe = ops_vulkan.prepare(nnos.compile(os.path.join(ROOT, path)))
        rng = np.random.default_rng(0)
        for v in exe.inputs.values():
            v[...] = rng.standard_normal(v.shape)
        fs = forms(exe)
        times = {k: [] for k in fs}
        for _ in range(a.rounds):                       # interleaved: drift hits every form alike
            for k, f in fs.items():
                for _ in range(a.calls):
                    t = time.perf_counter_ns()
                    f()
                    times[k].append(time.perf_counter_ns() - t)
        p = {k: percentiles(np.array(v) / 1000.0, (50, 99)) for k, v in times.items()}
        n = len(exe.pipes)
        kernels = max(p["per-layer submits"]["p50"] - n * p["floor"]["p50"], 0.0)
        print(f"{name} on {exe.dev.name} ({n} dispatches), µs per call:")
        for k, v in p.items():
            print(f"  {k:18} p50 {v['p50']:8.1f}  p99 {v['p99']:8.1f}")
        print(f"  replay / (floor + kernels) {p['replay']['p50'] / (p['floor']['p50'] + kernels):.2f} (target ≤ 1.5)"
              f"   per-layer / replay {p['per-layer submits']['p50'] / p['replay']['p50']:.2f} (target ≥ 2)"
              f"   re-recorded / replay {p['re-recorded']['p50'] / p['replay']['p50']:.2f}")


if __name__ == "__main__":
    main()
