"""nnos numpy plans against onnxruntime `session.run` and a hand-written numpy expression,
measured interleaved in one run (rounds of each, in turn) so machine noise hits all alike.

    python benchmarks/core_bench.py [--rounds 30] [--calls 300] [--json FILE]

Prints p50/p99 per call in µs, the ratio of nnos's p50 to onnxruntime's, arena bytes against
the lower bound, and compile time, for mlp_s, mlp_m, cnn_s, gru_s (targets from issue 2).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import onnxruntime as ort  # noqa: E402

import nnos  # noqa: E402
from nnos_models.zoo.build import build  # noqa: E402
from nnos.compiler import sample_inputs  # noqa: E402
from nnos.timing import percentiles  # noqa: E402

TARGETS = {"mlp_s": 0.55, "mlp_m": 0.8, "gru_s": 0.65, "cnn_s": 2.0}


def numpy_peer(path, feeds):
    """The same network as a plain numpy expression (allocating, no plan): the everyday way."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = m.graph.node
    if nodes[0].op_type == "Gemm":
        layers = [(w[n.input[1]].T.copy(), w[n.input[2]], nodes[i + 1].op_type if i + 1 < len(nodes) and
                   nodes[i + 1].op_type != "Gemm" else None) for i, n in enumerate(nodes) if n.op_type == "Gemm"]
        act = {"Tanh": np.tanh, "Relu": lambda v: np.maximum(v, 0), None: lambda v: v}
        x = feeds[m.graph.input[0].name]

        def run():
            h = x
            for W, b, a in layers:
                h = act[a](h @ W + b)
            return h
        return run
    return None


def timed(fn, calls):
    clock = time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json")
    ap.add_argument("--models", default="mlp_s,mlp_m,gru_s,cnn_s")
    a = ap.parse_args()
    names = a.models.split(",")
    paths = build(tempfile.mkdtemp(prefix="nnos-bench-"), names)
    results = {}
    for name in names:
        t0 = time.perf_counter()
        plan = nnos.compile(paths[name], check=False)
        compile_s = time.perf_counter() - t0
        feeds = sample_inputs(plan)
        exe = plan.bind("numpy")
        for k, v in feeds.items():
            np.copyto(exe.inputs[k], v)
        sess = ort.InferenceSession(paths[name], providers=["CPUExecutionProvider"])
        peers = {"nnos": exe.run, "onnxruntime": lambda s=sess, f=feeds: s.run(None, f)}
        np_peer = numpy_peer(paths[name], feeds)
        if np_peer:
            peers["numpy_expr"] = np_peer
        samples = {k: [] for k in peers}
        for fn in peers.values():
            timed(fn, a.calls)             # warm-up
        for _ in range(a.rounds):
            for k, fn in peers.items():
                samples[k].append(timed(fn, a.calls))
        row = {"compile_s": compile_s, "arena_bytes": plan.memory.arena_bytes,
               "lower_bound_bytes": plan.memory.lower_bound_bytes}
        for k, s in samples.items():
            us = np.concatenate(s) / 1000.0
            row[k] = percentiles(us, (50, 99), "_us")
        row["ratio_p50"] = row["nnos"]["p50_us"] / row["onnxruntime"]["p50_us"]
        solo = timed(exe.run, 20 * a.calls) / 1000.0      # nnos alone: the idle-jitter figure
        row["solo"] = percentiles(solo, (50, 99), "_us")
        row["target"] = TARGETS.get(name)
        results[name] = row
        peer = row.get("numpy_expr", {}).get("p50_us")
        print(f"{name:6}  nnos p50 {row['nnos']['p50_us']:7.2f} p99 {row['nnos']['p99_us']:7.2f} µs | "
              f"ort p50 {row['onnxruntime']['p50_us']:7.2f} p99 {row['onnxruntime']['p99_us']:7.2f} | "
              + (f"numpy expr p50 {peer:6.2f} | " if peer else "")
              + f"ratio {row['ratio_p50']:.2f} (target ≤ {row['target']}) | "
              f"solo p99/p50 {row['solo']['p99_us'] / row['solo']['p50_us']:.2f} | "
              f"arena/bound {row['arena_bytes'] / max(1, row['lower_bound_bytes']):.2f} | "
              f"compile {compile_s * 1000:.0f} ms", flush=True)
    env = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
           "numpy": np.__version__, "onnxruntime": ort.__version__, "nnos": nnos.__version__,
           "cpus": os.cpu_count()}
    print("env:", json.dumps(env))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
