"""Builds the vision example: python -m nnos_models.vision.build [OUT_DIR] [--width W].

``follow.onnx``: a small CNN that looks at the synthetic camera's scene (hardware/sim/camera.py:
a red disk on a shaded background), 96×96 RGB normalised to [-1, 1], and emits an action
chunk [1, 10, 6]: the SO-101's six joint targets for the next 10 ticks (100 Hz), following the
disk — pan with its x, shoulder and elbow with its y.

    image ─ conv 5×5/2 ─ relu ─ conv 3×3/2 ─ relu ─ conv 3×3 ─ relu ─ global avg pool ─┐
      └─ "redness" 1×1 conv ─ avg pool 4 ─ spatial softmax ─ expected (x, y) ───────────┴─ concat ─ gemm ─ [10, 6]

The convolutions are fixed (seeded); the head is fitted by ridge regression on synthetic
frames (the scene at random times, pre-processed exactly as the board does it: centre crop,
area resize, scale) against the joint targets of the next 10 ticks — training on synthetic
data, numpy only, in seconds. ``--width`` widens the trunk (the asynchronous-inference demo
uses a 20–40 ms variant).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK, JOINTS, DT = 10, 6, 0.01
FRAME = (480, 640)
IMAGE = {"crop": "center", "size": (96, 96), "resize": "area", "layout": "chw", "scale": 1 / 127.5,
         "mean": (1.0, 1.0, 1.0), "std": (1.0, 1.0, 1.0)}
BETA = 10.0                         # spatial softmax sharpness on the redness map


def joints(x: float, y: float) -> np.ndarray:
    """The SO-101 pose (rad) that follows a disk at (x, y) ∈ [0, 1]²."""
    dx, dy = x - 0.5, y - 0.5
    return np.array([1.2 * dx, -0.4 + 0.8 * dy, 0.5 - 0.6 * dy, 0.2 * dx, 0.0, 0.3], np.float32)


def _conv(name, x, cin, cout, k, stride, rng, nodes, inits):
    w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")]
    nodes += [helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"], kernel_shape=[k, k],
                               strides=[stride, stride], pads=[k // 2] * 4),
              helper.make_node("Relu", [f"{name}_c"], [name])]
    return name


def features_graph(width: int, seed: int = 0):
    """The fixed part: image → features [1, 2 + 2·width]. Returns (nodes, initializers, feature count)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    h = _conv("c1", "image", 3, width, 5, 2, rng, nodes, inits)
    h = _conv("c2", h, width, 2 * width, 3, 2, rng, nodes, inits)
    h = _conv("c3", h, 2 * width, 2 * width, 3, 1, rng, nodes, inits)
    red = np.array([[[[1.0]], [[-0.5]], [[-0.5]]]], np.float32) * BETA          # [1, 3, 1, 1]
    n = 24 * 24
    ys, xs = np.mgrid[0:24, 0:24].astype(np.float32)
    coords = np.stack([(xs.ravel() + 0.5) / 24, (ys.ravel() + 0.5) / 24], 1).astype(np.float32)   # [576, 2]
    inits += [numpy_helper.from_array(red, "red_w"), numpy_helper.from_array(coords, "coords"),
              numpy_helper.from_array(np.array([1, n], np.int64), "flat")]
    nodes += [helper.make_node("GlobalAveragePool", [h], ["gap4"]),
              helper.make_node("Flatten", ["gap4"], ["gap"]),
              helper.make_node("Conv", ["image", "red_w"], ["red"], kernel_shape=[1, 1]),
              helper.make_node("AveragePool", ["red"], ["red24"], kernel_shape=[4, 4], strides=[4, 4]),
              helper.make_node("Reshape", ["red24", "flat"], ["red_flat"]),
              helper.make_node("Softmax", ["red_flat"], ["where"], axis=1),
              helper.make_node("MatMul", ["where", "coords"], ["xy"]),
              helper.make_node("Concat", ["xy", "gap"], ["features"], axis=1)]
    return nodes, inits, 2 + 2 * width


def _model(nodes, inits, outputs, doc: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "follow", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 96, 96])],
                              outputs, inits)
    graph.doc_string = doc
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnos_models.vision")
    onnx.checker.check_model(model)
    return model


def training_set(n: int, seed: int = 1):
    """(pre-processed frames [n, 3, 96, 96], chunk targets [n, 10·6]) from the scene at random times."""
    from nnos_hardware.preprocess import Preprocess
    from nnos_hardware.sim.camera import Scene, target
    rng = np.random.default_rng(seed)
    scene, frame = Scene(*FRAME), np.zeros((*FRAME, 3), np.uint8)
    x = np.zeros((n, 3, 96, 96), np.float32)
    im = IMAGE
    y = np.zeros((n, CHUNK * JOINTS), np.float32)
    for i in range(n):
        t = rng.uniform(0, 60)
        scene.render(*target(t), out=frame)
        Preprocess(frame, x[i], im["size"], im["resize"], im["crop"], im["layout"], im["scale"], im["mean"], im["std"]).run()
        y[i] = np.concatenate([joints(*target(t + (k + 1) * DT)) for k in range(CHUNK)])
    return x, y


def build(width: int = 8, samples: int = 400, ridge: float = 1e-3) -> onnx.ModelProto:
    import nnos
    nodes, inits, nf = features_graph(width)
    trunk = _model(nodes, inits, [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, nf])], "features")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(trunk, os.path.join(tmp, "trunk.onnx"))
        plan = nnos.compile(os.path.join(tmp, "trunk.onnx"), check=False).bind("numpy")
    x, y = training_set(samples)
    f = np.zeros((samples, nf + 1), np.float64)
    for i in range(samples):
        plan.inputs["image"][...] = x[i]
        plan.run()
        f[i, :nf], f[i, nf] = plan.outputs["features"].reshape(-1), 1.0
    w = np.linalg.solve(f.T @ f + ridge * samples * np.eye(nf + 1), f.T @ y).astype(np.float32)
    inits += [numpy_helper.from_array(w[:nf], "head_w"), numpy_helper.from_array(w[nf], "head_b"),
              numpy_helper.from_array(np.array([1, CHUNK, JOINTS], np.int64), "chunk_shape")]
    nodes += [helper.make_node("Gemm", ["features", "head_w", "head_b"], ["flat_actions"]),
              helper.make_node("Reshape", ["flat_actions", "chunk_shape"], ["actions"])]
    rms = float(np.sqrt(np.mean((f @ w - y) ** 2)))
    return _model(nodes, inits, [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, CHUNK, JOINTS])],
                  f"follow the red disk: image [1,3,96,96] in [-1,1] → actions [1,{CHUNK},{JOINTS}] (SO-101 joint "
                  f"targets, next {CHUNK} ticks at {1 / DT:g} Hz); trunk width {width}; fit RMS {rms:.4f} rad")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nnos_models.vision.build")
    p.add_argument("out", nargs="?", default=HERE)
    p.add_argument("--width", type=int, default=8, help="trunk channels (the first conv's; the others twice it)")
    p.add_argument("--name", default="follow")
    a = p.parse_args(argv)
    model = build(a.width)
    path = os.path.join(a.out, f"{a.name}.onnx")
    onnx.save(model, path)
    print(path, model.graph.doc_string)
    return 0


if __name__ == "__main__":
    sys.exit(main())
