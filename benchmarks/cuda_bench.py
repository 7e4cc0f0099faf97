"""The cuda backend's per-call cost on an NVIDIA GPU against PyTorch, interleaved in one run, all
from and to host numpy arrays as the loop uses them:

  floor        a CUDA graph of the two copies alone (pinned input → GPU, GPU → pinned output),
               launched and waited for as nnos launches its plan
  nnos cuda    the plan as one CUDA graph (copies, every step's kernel)
  torch eager  the same network in PyTorch: the input copied in, the module, the output copied out
  torch graph  the same captured once with torch.cuda.graph and replayed (static input/output)

The network for torch is the same ONNX file converted with onnx2torch (mlp_s, cnn_s, cnn_l) or the
zoo's own PyTorch policy with the same weights (act_s, res5_s, mbv2_s).

    python benchmarks/cuda_bench.py [--rounds 10] [--calls 300] [--models mlp_s,cnn_s,cnn_l]

Targets (issue 19 item 8, from the CUDA issue): nnos ≤ 1.5× the floor on mlp_s; ≥ 5× faster than
torch eager on mlp_s; not slower than torch with CUDA graphs on the CNNs.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import nnos  # noqa: E402
from nnos.backends import ops_cuda  # noqa: E402
from nnos.timing import percentiles  # noqa: E402

ZOO = os.path.join(ROOT, "models", "zoo")
TORCH_POLICIES = ("act_s", "res5_s", "mbv2_s")


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def onnx_file(name: str, tmp: str) -> str:
    path = os.path.join(ZOO, f"{name}.onnx")
    if os.path.exists(path):
        return path
    return _load("zoo_build", os.path.join(ZOO, "build.py")).build(tmp, [name])[name]


def torch_module(name: str, path: str):
    if name in TORCH_POLICIES:
        return _load("zoo_torch", os.path.join(ZOO, "torch_policies.py")).policy(name).cuda().eval()
    from onnx2torch import convert
    return convert(path).cuda().eval()


def torch_forms(module, feeds: dict, out_shapes: list):
    """(eager, graph): each runs the module once from the host arrays in ``feeds`` to host arrays."""
    import torch
    host_in = [torch.from_numpy(v).pin_memory() for v in feeds.values()]
    static_in = [h.cuda() for h in host_in]
    host_out = [torch.empty(s).pin_memory() for s in out_shapes]

    def outs(y):
        return list(y) if isinstance(y, (tuple, list)) else [y]

    @torch.inference_mode()
    def eager():
        y = outs(module(*[h.cuda(non_blocking=True) for h in host_in]))
        for h, t in zip(host_out, y):
            h.copy_(t, non_blocking=True)
        torch.cuda.synchronize()

    with torch.inference_mode():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                module(*static_in)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_out = outs(module(*static_in))

    def graphed():
        for d, h in zip(static_in, host_in):
            d.copy_(h, non_blocking=True)
        g.replay()
        for h, t in zip(host_out, static_out):
            h.copy_(t, non_blocking=True)
        torch.cuda.synchronize()
    return eager, graphed


def floor_form(exe):
    """A graph of the plan's copies alone, launched like the plan's."""
    from nnos.backends.cuda.graph import PlanGraph
    plan = exe.plan
    g, mem = plan.graph, plan.memory
    ins = [(mem.tensors[n], g.types[n].nbytes) for n in g.inputs]
    outs = [(mem.tensors[n], g.types[n].nbytes) for n in g.outputs]
    return PlanGraph("", [], mem.arena_bytes, np.zeros(16, np.float32), ins, outs).launch


def measure(forms: dict, rounds: int, calls: int) -> dict:
    """Interleaved: each round runs every form ``calls`` times; per-call times in µs."""
    times = {k: [] for k in forms}
    for f in forms.values():
        for _ in range(20):
            f()
    for _ in range(rounds):
        for k, f in forms.items():
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                f()
                times[k].append((time.perf_counter_ns() - t0) / 1e3)
    return {k: percentiles(np.array(v)) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--models", default="mlp_s,cnn_s,cnn_l,res5_s,mbv2_s,act_s")
    a = ap.parse_args()
    why = ops_cuda.available()
    if why:
        sys.exit(f"no CUDA GPU here: {why}")
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            path = onnx_file(name, tmp)
            plan = nnos.compile(path)
            exe = plan.bind("cuda")
            rng = np.random.default_rng(0)
            feeds = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in exe.inputs.items()}
            for k, v in feeds.items():
                exe.inputs[k][...] = v
            forms = {"floor": floor_form(exe), "nnos cuda": exe.run}
            try:
                forms["torch eager"], forms["torch graph"] = torch_forms(
                    torch_module(name, path), feeds, [v.shape for v in exe.outputs.values()])
            except Exception as e:                  # noqa: BLE001 - a peer that cannot run this network here
                print(f"{name}: torch cannot run it on the GPU ({type(e).__name__}: {str(e)[:120]})")
            r = measure(forms, a.rounds, a.calls)
            print(f"{name}: {exe.facts['device']} (cc {exe.facts['compute_capability']}), {exe.facts['kernels']} kernels, "
                  f"torch {torch.__version__}, cupy {exe.facts['cupy']}")
            for k, p in r.items():
                print(f"  {k:12s} p50 {p['p50']:8.1f} µs  p99 {p['p99']:8.1f} µs")
            n = r["nnos cuda"]["p50"]
            ratios = [f"nnos/floor {n / r['floor']['p50']:.2f}"] + [
                f"{k.split()[1]}/nnos {r[k]['p50'] / n:.2f}" for k in ("torch eager", "torch graph") if k in r]
            print("  " + "  ".join(ratios), flush=True)


if __name__ == "__main__":
    main()
