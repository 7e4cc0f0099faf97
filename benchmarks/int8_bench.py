"""int8 and float16 against float32, interleaved in rounds in one run: each zoo model, its
onnxruntime-quantized forms (models/zoo/quantize.py) and its float16 form (models/zoo/precision.py:
`fp16`), on nnos's cpu backend and on onnxruntime (1 thread, io-binding) — nnos's form p50 over
nnos float32 p50 (issue 18's targets: int8 ≤ 0.6 for Conv/MatMul models, float16 ≤ 1.2), and
nnos over onnxruntime running the same form.

    python benchmarks/int8_bench.py [--rounds 15] [--calls 300] [--models mlp_m,cnn_s,cnn_l,res5_s,...]
                                    [--variants qdq_u8,qdq_s8,dynamic,fp16] [--json FILE]

NNOS_CPU_TARGET=x86-64-v3 measures the AVX2 kernels on an AVX-512 machine (x86-64-v2: the
generic loops). Prints the CPU's flags that decide the kernel (avx512_vnni, avx2).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import nnos  # noqa: E402
from nnos import flags  # noqa: E402
from nnos.backends import prepare  # noqa: E402
from nnos.backends.cpu.toolchain import cpu_features  # noqa: E402
from nnos_models.zoo.build import build  # noqa: E402
from nnos_models.zoo.precision import float16  # noqa: E402
from nnos_models.zoo.quantize import input_feed, quantized  # noqa: E402

from core_bench import timed  # noqa: E402
from peers import onnxruntime_runner  # noqa: E402


def nnos_runner(path: str, feeds: dict):
    plan = nnos.compile(path)
    exe = prepare(plan, "cpu")
    if exe.backend != "cpu":
        print(f"note: {os.path.basename(path)} runs on {exe.backend}, not cpu")
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    return exe.run, exe


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--models", default="mlp_m,cnn_s,cnn_l,act_s,mbv2_s,res5_s")
    ap.add_argument("--variants", default="qdq_u8,qdq_s8,dynamic")
    ap.add_argument("--json")
    args = ap.parse_args()
    feats = cpu_features()
    print(f"{platform.processor() or platform.machine()}; target {flags.CPU_TARGET.get() or 'native'}; "
          f"avx512_vnni={'avx512_vnni' in feats} avx2={'avx2' in feats}")
    tmp = tempfile.mkdtemp()
    names = args.models.split(",")
    exported = [n for n in names if os.path.exists(os.path.join(ROOT, "models", "zoo", f"{n}.onnx"))]
    models = build(tmp, [n for n in names if n not in exported]) if len(exported) < len(names) else {}
    models.update({n: os.path.join(ROOT, "models", "zoo", f"{n}.onnx") for n in exported})
    runs, facts = {}, {}
    for name, path in models.items():
        feeds = input_feed(path)
        runs[(name, "fp32", "nnos")], _ = nnos_runner(path, feeds)
        runs[(name, "fp32", "ort1")] = onnxruntime_runner(path, feeds, 1)[0]
        for v in args.variants.split(","):
            out, form_feeds = os.path.join(tmp, f"{name}.{v}.onnx"), feeds
            if v == "fp16":
                q, form_feeds = float16(path, out), {k: a.astype(np.float16) for k, a in feeds.items()}
            else:
                q = quantized(path, out, v)
            runs[(name, v, "nnos")], exe = nnos_runner(q, form_feeds)
            facts[(name, v)] = exe.facts.get("compile_s")
            runs[(name, v, "ort1")] = onnxruntime_runner(q, form_feeds, 1)[0]
    samples = {k: [] for k in runs}
    for _ in range(args.rounds):                     # interleaved: noise hits every runner alike
        for k, fn in runs.items():
            samples[k].append(timed(fn, args.calls) / 1000.0)
    p50 = {k: float(np.percentile(np.concatenate(v), 50)) for k, v in samples.items()}
    print(f"{'model':8} {'form':8} {'nnos µs':>9} {'ort1 µs':>9} {'form/fp32':>10} {'nnos/ort1':>10}")
    rows = []
    for name in models:
        for v in ["fp32"] + args.variants.split(","):
            n, o = p50[(name, v, "nnos")], p50[(name, v, "ort1")]
            ratio = n / p50[(name, "fp32", "nnos")]
            print(f"{name:8} {v:8} {n:9.1f} {o:9.1f} {ratio if v != 'fp32' else float('nan'):10.3f} {n / o:10.3f}")
            rows.append({"model": name, "form": v, "nnos_p50_us": n, "ort1_p50_us": o,
                         "form_over_fp32": ratio, "nnos_over_ort1": n / o})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "vnni": "avx512_vnni" in feats, "target": flags.CPU_TARGET.get() or "native"}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
