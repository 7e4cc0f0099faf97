"""The cpu backend on another architecture, under emulation: inside an image's root filesystem
(e.g. the arm64 one `./build.sh image --arch arm64` leaves in out/work-arm64/rootfs, run through
qemu-user), with that image's own Python, numpy and gcc, every zoo model (the committed exports
too: act_s, mbv2_s, res5_s, ...) and a set of graphs covering each op family is compiled to C
for that CPU and checked against the numpy reference; each plan with steps split over a team
(a board's model_cpus, cpu/team.py) is also run on two threads and checked bitwise against one.

    python benchmarks/cpu_cross_check.py out/work-arm64/rootfs [--target armv8-a] [--peer] [--tree] [--json FILE]

--tree: this working tree's nnos package instead of the one the image was built with (copied
into the root filesystem's /tmp, first on its path): a change to the backend checked on that
architecture without building the image again.

--peer: onnxruntime for that architecture (its wheel fetched from PyPI by the host's pip into the
root filesystem's /tmp, removed after) runs the zoo models in the same emulator, interleaved with
nnos, one thread each: the ratio nnos p50 / onnxruntime p50 (issue 18's arm64 figure). Times
under qemu-user say nothing absolute about a real core; the ratio is what is reported. (Without
/sys in the chroot onnxruntime's cpuinfo cannot list the CPUs and says so; mounted, it crashed
under qemu-user reading the host's. Its float kernels are NEON either way.)
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
out = {"machine": platform.machine(), "numpy": np.__version__, "nnos": os.path.dirname(nnos.__file__), "cases": {}}
paths = build("/tmp/nnos-check/zoo")
exported = "/tmp/nnos-check/exported"
paths.update({f[:-5]: os.path.join(exported, f) for f in sorted(os.listdir(exported)) if f.endswith(".onnx")})
zoo = set(paths)
paths.update({name: make("/tmp/nnos-check/" + name + ".onnx") for name, make in GRAPHS.items()})
try:
    import onnxruntime as ort
    out["onnxruntime"] = ort.__version__
except ImportError:
    ort = None


def team(exe, plan):
    """Two threads (a worker on CPU 0) against one: bitwise, or None when no step splits."""
    feeds = sample_inputs(plan, seed=7)
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    one = {k: v.copy() for k, v in exe.outputs.items()}
    line = exe.use_cpus([0])
    if "2 CPUs" not in line:
        return None
    same = True
    for _ in range(20):
        exe.run()
        same = same and all(np.array_equal(exe.outputs[k], one[k]) for k in one)
    exe.use_cpus([])
    return same


def versus_peer(exe, plan, path, rounds=5, calls=20):
    """nnos p50 / onnxruntime p50, one thread each, interleaved in rounds."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feeds = sample_inputs(plan, seed=0)
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    times = {"nnos": [], "ort": []}
    for _ in range(rounds):
        for who, call in (("nnos", exe.run), ("ort", lambda: sess.run(None, feeds))):
            call()
            for _ in range(calls):
                t = time.perf_counter()
                call()
                times[who].append(time.perf_counter() - t)
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    return p50["nnos"] / p50["ort"], p50
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
            atol = 1 if w.dtype.kind in "iu" else 1e-5        # integers: a quantization step (a tie rounded apart)
            if not np.allclose(got, w, rtol=1e-4, atol=atol, equal_nan=True):
                worst = float("inf")
            else:
                worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - w))) if w.size else 0.0)
    ok = worst != float("inf")
    case = {"ok": ok, "max_abs_error": worst, "vector_floats": exe.facts["vector_floats"],
            "target": exe.facts["target"], "compile_s": round(time.time() - t0, 1)}
    shared = team(exe, plan)
    if shared is not None:
        case["team_bitwise"] = shared
        case["ok"] = ok = ok and shared
    note = "" if shared is None else ("; two threads bitwise one" if shared else "; two threads DIFFER from one")
    if ort is not None and name in zoo:
        case["nnos_over_ort"], case["p50_s"] = versus_peer(exe, plan, path)
        note += f"; nnos/onnxruntime {case['nnos_over_ort']:.3f}"
    out["cases"][name] = case
    print(f"{name:<14} {'ok' if ok else 'DIFFERS'}  max abs error {worst:.2g}  "
          f"({exe.facts['target']}, {exe.facts['vector_floats']}-float vectors, {time.time() - t0:.1f} s{note})", flush=True)
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


def depthwise_rows(path):
    """Depthwise convolutions between NCHW tensors at stride 1 and 2: the row form (cpu/depthwise.py)."""
    nodes = [helper.make_node("Conv", ["X", "W1", "b1"], ["A"], kernel_shape=[3, 3], pads=[1] * 4, group=6),
             helper.make_node("Clip", ["A", "lo", "hi"], ["A1"]),
             helper.make_node("Conv", ["A1", "W2"], ["Y"], kernel_shape=[5, 5], pads=[2] * 4, strides=[2, 2], group=6)]
    return _save(path, nodes, [vi("X", [2, 6, 11, 13])], [vi("Y", [2, 6, 6, 7])],
                 [("W1", r(6, 1, 3, 3, seed=1)), ("b1", r(6, seed=2)), ("lo", np.zeros((), np.float32)),
                  ("hi", np.full((), 6, np.float32)), ("W2", r(6, 1, 5, 5, seed=3))])


def depthwise_quantized(path):
    """Depthwise convolutions whose only reader is a QuantizeLinear: the rows stored as its bytes
    (cpu/qstore.py), at stride 1 with rows of two vectors (uint8) and at stride 2 (int8)."""
    nodes = [helper.make_node("Conv", ["X", "W1", "b1"], ["A"], kernel_shape=[3, 3], pads=[1] * 4, group=5),
             helper.make_node("Clip", ["A", "lo", "hi"], ["A1"]),
             helper.make_node("QuantizeLinear", ["A1", "s", "z"], ["Y1"]),
             helper.make_node("Conv", ["X", "W2"], ["A2"], kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2], group=5),
             helper.make_node("QuantizeLinear", ["A2", "s2", "z2"], ["Y2"])]
    return _save(path, nodes, [vi("X", [1, 5, 7, 37])],
                 [vi("Y1", [1, 5, 7, 37], TensorProto.UINT8), vi("Y2", [1, 5, 4, 19], TensorProto.INT8)],
                 [("W1", r(5, 1, 3, 3, seed=1)), ("b1", r(5, seed=2)), ("lo", np.zeros((), np.float32)),
                  ("hi", np.full((), 6, np.float32)), ("s", np.float32(6 / 255)), ("z", np.uint8(0)),
                  ("W2", r(5, 1, 3, 3, seed=3)), ("s2", np.float32(0.05)), ("z2", np.int8(-5))])


def qdq_depthwise(path):
    """A QDQ model's depthwise convolutions (3×3 at stride 1 with rows of two vectors and more,
    5×5 at stride 2): depthwise ConvIntegers whose steps run the DequantizeLinear, bias, ReLU and
    QuantizeLinear after them (cpu/qdepthwise.py; the exact float form off AVX-512 VBMI)."""
    def dq(name, scale, zp, out, **kw):
        return helper.make_node("DequantizeLinear", [name, scale, zp], [out], **kw)
    nodes = [dq("X", "s", "z", "x"), dq("W1", "ws1", "wz", "w1", axis=0), dq("W2", "ws2", "wz", "w2", axis=0),
             helper.make_node("Conv", ["x", "w1", "b"], ["a"], kernel_shape=[3, 3], pads=[1] * 4, group=6),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("QuantizeLinear", ["r", "s", "z"], ["Y1"]),
             helper.make_node("Conv", ["x", "w2"], ["c"], kernel_shape=[5, 5], pads=[2] * 4, strides=[2, 2], group=6),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["Y2"])]
    rng = np.random.default_rng(7)
    return _save(path, nodes, [vi("X", [1, 6, 9, 37], TensorProto.UINT8)],
                 [vi("Y1", [1, 6, 9, 37], TensorProto.UINT8), vi("Y2", [1, 6, 5, 19], TensorProto.UINT8)],
                 [("s", np.float32(0.04)), ("z", np.uint8(20)), ("wz", np.zeros(6, np.int8)), ("b", r(6, seed=4)),
                  ("W1", rng.integers(-128, 128, (6, 1, 3, 3)).astype(np.int8)), ("ws1", np.full(6, 0.01, np.float32)),
                  ("W2", rng.integers(-128, 128, (6, 1, 5, 5)).astype(np.int8)), ("ws2", np.full(6, 0.007, np.float32))])


def gelu_table(path):
    """A QDQ GELU (a rounding after each op) and an Erf with a per-channel bias after it: both
    functions of one 8-bit grid's values, tables (passes/lookup.py) read a vector at a time and,
    before the bias, an element at a time in the DequantizeLinear's loop."""
    def rounded(t, k):
        return [helper.make_node("QuantizeLinear", [t, "s", "z"], [f"q{k}"]),
                helper.make_node("DequantizeLinear", [f"q{k}", "s", "z"], [f"d{k}"])]
    nodes = (rounded("X", 0) + [helper.make_node("Div", ["d0", "sqrt2"], ["a"]), helper.make_node("Erf", ["a"], ["e"])]
             + rounded("e", 1) + [helper.make_node("Add", ["d1", "one"], ["p"])] + rounded("p", 2)
             + [helper.make_node("Mul", ["d0", "d2"], ["m"])] + rounded("m", 3)
             + [helper.make_node("Mul", ["d3", "half"], ["Y1"]), helper.make_node("Erf", ["d0"], ["f"]),
                helper.make_node("Add", ["f", "b"], ["Y2"])])
    return _save(path, nodes, [vi("X", [2, 3, 29])], [vi("Y1", [2, 3, 29]), vi("Y2", [2, 3, 29])],
                 [("s", np.float32(0.03)), ("z", np.uint8(128)), ("sqrt2", np.float32(2 ** 0.5)),
                  ("one", np.float32(1)), ("half", np.float32(0.5)), ("b", r(29, seed=1))])


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


GRAPHS = {"lstm_bidir": lstm, "mobile_block": mobile, "depthwise_rows": depthwise_rows,
          "depthwise_quantized": depthwise_quantized, "qdq_depthwise": qdq_depthwise, "gelu_table": gelu_table,
          "attention": attention,
          "shape_ops": shapes}
'''


def peer_wheel(rootfs: str, target: str) -> None:
    """onnxruntime's wheel for the root filesystem's architecture and Python, unpacked by the
    host's pip into ``target`` (nothing runs emulated; numpy is the image's own)."""
    machine = "aarch64" if os.path.isdir(os.path.join(rootfs, "usr", "lib", "aarch64-linux-gnu")) else "x86_64"
    plats = [f"--platform=manylinux_2_28_{machine}", f"--platform=manylinux_2_27_{machine}",
             f"--platform=manylinux2014_{machine}"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:", "--target", target,
                    "--python-version", "3.11", "--implementation", "cp", *plats, "onnxruntime"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("rootfs")
    ap.add_argument("--target", default="armv8-a")
    ap.add_argument("--peer", action="store_true", help="time the zoo against onnxruntime in the same emulator")
    ap.add_argument("--tree", action="store_true", help="this working tree's nnos, not the image's")
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
    zoo = os.path.join(ROOT, "models", "zoo")               # the committed exports (the image leaves them out)
    shutil.copytree(zoo, os.path.join(work, "exported"), ignore=lambda d, names: [n for n in names if not n.endswith(".onnx")])
    if a.peer:
        peer_wheel(a.rootfs, os.path.join(work, "peer"))
    if a.tree:
        shutil.copytree(os.path.join(ROOT, "nnos"), os.path.join(work, "tree", "nnos"),
                        ignore=shutil.ignore_patterns("__pycache__"))
    proc = os.path.join(a.rootfs, "proc")
    subprocess.run(["mount", "-t", "proc", "proc", proc], check=True)
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1",
               "NNOS_CPU_TARGET": a.target, "NNOS_CPU_CACHE": "/tmp/nnos-check/cache",
               "PYTHONPATH": "/tmp/nnos-check/tree:/tmp/nnos-check/peer"}
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
    print(f"{result['machine']}: {ok}/{len(result['cases'])} models match the numpy reference (numpy {result['numpy']}, "
          f"nnos from {result.get('nnos')})")
    ratios = {k: c["nnos_over_ort"] for k, c in result["cases"].items() if "nnos_over_ort" in c}
    if ratios:
        print(f"nnos p50 / onnxruntime {result.get('onnxruntime')} p50, one thread each, the same emulator: " +
              ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
