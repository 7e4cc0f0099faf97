"""Build the benchmark/demo models as ONNX files with seeded random weights.

    python -m nnos_models.zoo.build [OUTDIR]

mlp_s  8→64→64→2, tanh            (a small control policy)
mlp_m  64→256→256→256→16, relu
cnn_s  1×3×64×64: conv16 k5 s2, conv32 k3 s2, conv32 k3 s2 (relu each), flatten, gemm64 relu, gemm4
gru_s  GRU 16→64, one step, hidden state in and out
cnn_l  1×4×84×84 Atari-style: conv32 k8 s4, conv64 k4 s2, conv64 k3 s1 (relu each), gemm512 relu, gemm6

Layers are exported the way torch.onnx does: Gemm with transB=1, a symbolic batch dimension,
Conv with bias. Weights use He-style scaling so activations stay in a sensible range.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    def __init__(self, name: str, seed: int):
        self.name, self.rng = name, np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def weight(self, shape, fan_in):
        self.n += 1
        name = f"w{self.n}"
        w = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(w, name))
        return name

    def bias(self, n):
        self.n += 1
        name = f"b{self.n}"
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(n) * 0.1).astype(np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}_{self.n}", **attrs))
        return out

    def linear(self, x, k, n, act=None):
        y = self.node("Gemm", [x, self.weight((n, k), k), self.bias(n)], transB=1)
        return self.node(act, [y]) if act else y

    def conv(self, x, c, m, k, s, p, act="Relu"):
        y = self.node("Conv", [x, self.weight((m, c, k, k), c * k * k), self.bias(m)],
                      kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
        return self.node(act, [y]) if act else y

    def model(self, inputs, outputs):
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nnos-zoo")
        onnx.checker.check_model(m)
        return m


def _io(name, *shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def mlp(name, sizes, act, seed):
    b = Builder(name, seed)
    x = "obs"
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        x = b.linear(x, k, n, act if i < len(sizes) - 2 else None)
    b.nodes[-1].output[0] = "action"
    return b.model([_io("obs", sizes[0])], [_io("action", sizes[-1])])


def cnn(name, seed, inp, shape, convs, hidden, out_name, classes):
    """convs: (out_channels, kernel, stride, pad) each followed by ReLU; then flatten, a ReLU
    hidden layer and the output layer."""
    b = Builder(name, seed)
    x, c, hw = inp, shape[0], shape[1]
    for m, k, s, p in convs:
        x = b.conv(x, c, m, k, s, p)
        c, hw = m, (hw + 2 * p - k) // s + 1
    x = b.node("Flatten", [x], axis=1)
    x = b.linear(x, c * hw * hw, hidden, "Relu")
    x = b.linear(x, hidden, classes)
    b.nodes[-1].output[0] = out_name
    return b.model([_io(inp, *shape)], [_io(out_name, classes)])


def cnn_s():
    return cnn("cnn_s", 3, "image", (3, 64, 64), [(16, 5, 2, 2), (32, 3, 2, 1), (32, 3, 2, 1)], 64, "logits", 4)


def cnn_l():
    return cnn("cnn_l", 5, "frames", (4, 84, 84), [(32, 8, 4, 0), (64, 4, 2, 0), (64, 3, 1, 0)], 512, "q", 6)


def gru_s():
    b = Builder("gru_s", 4)
    hidden, inp = 64, 16
    w = b.weight((1, 3 * hidden, inp), inp)
    r = b.weight((1, 3 * hidden, hidden), hidden)
    bias = b.bias(6 * hidden)
    b.inits[-1] = numpy_helper.from_array(numpy_helper.to_array(b.inits[-1]).reshape(1, -1), bias)
    b.nodes.append(helper.make_node("GRU", ["x", w, r, bias, "", "h"], ["", "h_out"], name="gru",
                                    hidden_size=hidden, linear_before_reset=1))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "batch", inp])
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "batch", hidden])
    ho = helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, "batch", hidden])
    return b.model([x, h], [ho])


MODELS = {
    "mlp_s": lambda: mlp("mlp_s", [8, 64, 64, 2], "Tanh", 1),
    "mlp_m": lambda: mlp("mlp_m", [64, 256, 256, 256, 16], "Relu", 2),
    "cnn_s": cnn_s,
    "gru_s": gru_s,
    "cnn_l": cnn_l,
}


def build(outdir: str, names=None) -> dict[str, str]:
    os.makedirs(outdir, exist_ok=True)
    paths = {}
    for name in names or MODELS:
        path = os.path.join(outdir, f"{name}.onnx")
        onnx.save(MODELS[name](), path)
        paths[name] = path
    return paths


if __name__ == "__main__":
    for name, path in build(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(__file__)).items():
        print(f"{name}: {path} ({os.path.getsize(path)} bytes)")
