"""Timing a plan on a backend: the measurement behind `nnos bench`, the control plane's
intake (measured on the backend the loop will run) and provisioning. The loop's admission
times a bound slot in its slack (runtime/slots.py) with the same figures (timing.latency_figures)."""
from __future__ import annotations

import numpy as np

from .. import flags
from ..plan.sample import sample_inputs
from ..timing import latency_figures, now_ns


def bench(plan, iters: int, warmup: int = 200, backend: str = "numpy") -> dict:
    """p50/p99/p99.9/max/mean µs of ``iters`` calls after ``warmup``, on ``backend``."""
    exe = plan.bind(backend)
    for name, v in sample_inputs(plan).items():
        np.copyto(exe.inputs[name], v)
    run = exe.run
    for _ in range(warmup):
        run()
    times = np.empty(iters, dtype=np.int64)
    for i in range(iters):
        t0 = now_ns()
        run()
        times[i] = now_ns() - t0
    figures = latency_figures(times)
    return {"backend": exe.backend, "iters": iters, **figures}


def step_times(plan, iters: int, warmup: int = 50) -> list[dict]:
    """Each step's mean µs over ``iters`` calls after ``warmup``, on the cpu backend on one
    thread (cpu/profile.py), slowest first: its index, op (with the ops fused into it), name,
    output shape, µs and share of the steps' sum. A step that stores the next step's
    QuantizeLinear bytes (cpu/qstore.py) is one row, "+QuantizeLinear"."""
    from .ops_cpu import CpuExecutable
    exe = CpuExecutable(plan, profile=True)
    for name, v in sample_inputs(plan).items():
        np.copyto(exe.inputs[name], v)
    exe.step_times(warmup)
    times = exe.step_times(iters)
    total = sum(t for _, t in times) or 1.0
    g, rows = plan.graph, []
    for s, t in times:
        node = g.nodes[s]
        ops = [op for t in [s] + exe.absorbed.get(s, []) for op in [g.nodes[t].op] + [e.op for e in g.nodes[t].epilogue]]
        rows.append({"step": s, "op": "+".join(ops), "name": node.name,
                     "shape": list(g.type_of(node.outputs[0]).shape), "us": round(t / 1000, 3),
                     "share": round(t / total, 4)})
    return sorted(rows, key=lambda r: -r["us"])


def measure(plan, runs: int = 1000) -> dict:
    """What a stored model's report says of its speed: measured on the backend the loop runs."""
    r = bench(plan, runs, warmup=50, backend=flags.BACKEND.get())
    return {k: round(r[k], 2) for k in ("p50_us", "p99_us", "p999_us", "max_us")} | {"runs": runs, "backend": r["backend"]}
