"""The cpu backend on another architecture, under emulation: inside an image's root filesystem
(e.g. the arm64 one `./build.sh image --arch arm64` leaves in out/work-arm64/rootfs, run through
qemu-user), with that image's own Python, numpy and gcc, every zoo model and a set of graphs
covering each op family is compiled to C for that CPU and checked against the numpy reference.

    python benchmarks/cpu_cross_check.py out/work-arm64/rootfs [--target armv8-a] [--json FILE]

A correctness run, not a timing one (qemu-user's times say nothing about a real core).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# runs inside the root filesystem: builds the models with the image's onnx, compares backends
INSIDE = r'''
import json, os, platform, sys, time
import numpy as np
import nnos
from nnos.backends import prepare
from nnos.compiler import sample_inputs
sys.path.insert(0, "/tmp/nnos-check")
from graphs import GRAPHS
from nnos_models.zoo.build import build
out = {"machine": platform.machine(), "numpy": np.__version__, "cases": {}}
paths = build("/tmp/nnos-check/zoo")
paths.update({name: make("/tmp/nnos-check/" + name + ".onnx") for name, make in GRAPHS.items()})
for name, path in paths.items():
    t0 = time.time()
    try:
        plan = nnos.compile(path)
        exe = prepare(plan, "cpu")
    except Exception as e:
        out["cases"][name] = {"ok": False, "error": str(e)}
        print(f"{name:<14} REFUSED {e}", flush=True)
        continue
    worst = 0.0
    for seed in range(3):
        feeds = sample_inputs(plan, seed=seed)
        want = {k: np.array(v) for k, v in plan(feeds).items()}
        for k, v in feeds.items():
            np.copyto(exe.inputs[k], v)
        exe.run()
        for k, w in want.items():
            got = exe.outputs[k]
            if not np.allclose(got, w, rtol=1e-4, atol=1e-5, equal_nan=True):
                worst = float("inf")
            else:
                worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - w))) if w.size else 0.0)
    ok = worst != float("inf")
    out["cases"][name] = {"ok": ok, "max_abs_error": worst, "vector_floats": exe.facts["vector_floats"],
                          "target": exe.facts["target"], "compile_s": round(time.time() - t0, 1)}
    print(f"{name:<14} {'ok' if ok else 'DIFFERS'}  max abs error {worst:.2g}  "
          f"({exe.facts['target']}, {exe.facts['vector_floats']}-float vectors, {time.time() - t0:.1f} s)", flush=True)
json.dump(out, open("/tmp/nnos-check/result.json", "w"), indent=1)
sys.exit(0 if all(c["ok"] for c in out["cases"].values()) else 1)
'''

# graphs covering the op families the zoo models do not: built with onnx.helper inside
GRAPHS = r'''
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(path, nodes, ins, outs, inits=()):
    g = helper.make_graph(nodes, "g", ins, outs, [numpy_helper.from_array(a, n) for n, a in inits])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def r(*shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.3).astype(np.float32)


def lstm(path):
    return _save(path, [helper.make_node("LSTM", ["X", "W", "R", "B", "", "H0", "C0"], ["Y", "YH", "YC"],
                                         hidden_size=24, direction="bidirectional")],
                 [vi("X", [5, 2, 10]), vi("H0", [2, 2, 24]), vi("C0", [2, 2, 24])],
                 [vi("Y", [5, 2, 2, 24]), vi("YH", [2, 2, 24]), vi("YC", [2, 2, 24])],
                 [("W", r(2, 96, 10, seed=1)), ("R", r(2, 96, 24, seed=2)), ("B", r(2, 192, seed=3))])


def mobile(path):
    nodes = [helper.make_node("Conv", ["X", "W1"], ["A"], kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["A"], ["A1"]),
             helper.make_node("Conv", ["A1", "W2"], ["B"], kernel_shape=[3, 3], pads=[1] * 4, group=16),
             helper.make_node("BatchNormalization", ["B", "s", "b", "m", "v"], ["B1"]),
             helper.make_node("HardSwish", ["B1"], ["B2"]),
             helper.make_node("MaxPool", ["B2"], ["C"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["C"], ["D"]),
             helper.make_node("Flatten", ["D"], ["E"]),
             helper.make_node("Gemm", ["E", "W3", "b3"], ["L"], transB=1),
             helper.make_node("Softmax", ["L"], ["Y"])]
    return _save(path, nodes, [vi("X", [1, 3, 32, 32])], [vi("Y", [1, 5])],
                 [("W1", r(16, 3, 3, 3, seed=1)), ("W2", r(16, 1, 3, 3, seed=2)), ("s", r(16, seed=3) + 1),
                  ("b", r(16, seed=4)), ("m", r(16, seed=5)), ("v", np.abs(r(16, seed=6)) + 0.5),
                  ("W3", r(5, 16, seed=7)), ("b3", r(5, seed=8))])


def attention(path):
    nodes = [helper.make_node("MatMul", ["X", "Wq"], ["Q"]), helper.make_node("MatMul", ["X", "Wk"], ["K"]),
             helper.make_node("Transpose", ["K"], ["KT"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["Q", "KT"], ["S"]),
             helper.make_node("Softmax", ["S"], ["P"], axis=-1),
             helper.make_node("MatMul", ["P", "X"], ["O"]),
             helper.make_node("LayerNormalization", ["O", "g", "bb"], ["N"], axis=-1),
             helper.make_node("ReduceMean", ["N"], ["Y"], axes=[1], keepdims=0)]
    return _save(path, nodes, [vi("X", [2, 6, 16])], [vi("Y", [2, 16])],
                 [("Wq", r(16, 16, seed=1)), ("Wk", r(16, 16, seed=2)), ("g", r(16, seed=3) + 1), ("bb", r(16, seed=4))])


def shapes(path):
    nodes = [helper.make_node("Slice", ["X", "st", "en", "ax"], ["S"]),
             helper.make_node("Concat", ["S", "S"], ["C"], axis=1),
             helper.make_node("Split", ["C", "sp"], ["P1", "P2"], axis=2),
             helper.make_node("Mul", ["P1", "P2"], ["M"]),
             helper.make_node("Greater", ["M", "z"], ["G"]),
             helper.make_node("Where", ["G", "M", "z"], ["W"]),
             helper.make_node("ConvTranspose", ["W", "WT"], ["Y"], strides=[2, 2], kernel_shape=[3, 3])]
    return _save(path, nodes, [vi("X", [1, 4, 8, 8])], [vi("Y", [1, 2, 7, 17])],
                 [("st", np.array([1, 0], np.int64)), ("en", np.array([3, 6], np.int64)), ("sp", np.array([3, 3], np.int64)),
                  ("ax", np.array([1, 2], np.int64)), ("z", np.zeros((1,), np.float32)), ("WT", r(4, 2, 3, 3, seed=5))])


GRAPHS = {"lstm_bidir": lstm, "mobile_block": mobile, "attention": attention, "shape_ops": shapes}
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("rootfs")
    ap.add_argument("--target", default="armv8-a")
    ap.add_argument("--json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("chroot needs root")
    work = os.path.join(a.rootfs, "tmp", "nnos-check")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    for name, text in (("inside.py", INSIDE), ("graphs.py", GRAPHS)):
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    proc = os.path.join(a.rootfs, "proc")
    subprocess.run(["mount", "-t", "proc", "proc", proc], check=True)
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1",
               "NNOS_CPU_TARGET": a.target, "NNOS_CPU_CACHE": "/tmp/nnos-check/cache"}
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        r = subprocess.run([chroot, a.rootfs, "/usr/bin/python3", "/tmp/nnos-check/inside.py"], env=env)
        with open(os.path.join(work, "result.json")) as f:
            result = json.load(f)
    finally:
        subprocess.run(["umount", proc])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    ok = sum(c["ok"] for c in result["cases"].values())
    print(f"{result['machine']}: {ok}/{len(result['cases'])} models match the numpy reference (numpy {result['numpy']})")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
