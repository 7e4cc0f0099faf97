"""Quantized models as onnxruntime's quantizer writes them (models/zoo/quantize.py), and
onnxruntime running them; random integers over a whole 8-bit type."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from nnos_models.zoo.quantize import input_feed, quantized  # noqa: F401
from tests.support.onnx_models import model, save, vi


# an 8-bit ONNX type by numpy dtype, and random integers over a whole integer type
I8 = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}


def ints(dtype, shape, rng):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape, dtype=np.int64).astype(dtype)


def ops(path: str) -> set:
    return {n.op_type for n in onnx.load(path).graph.node}


# operators onnxruntime runs with its own integer kernels, whatever its optimization level
INTEGER_KERNELS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}


def reference_outputs(path: str, feeds: dict) -> list:
    """The reference a quantized model is held to: onnxruntime running the graph's operators as
    written (no graph optimizations) or, where the graph holds operators onnxruntime computes
    with its own integer kernels, the ONNX project's reference evaluator (onnx.reference, at
    opset 21, where its QuantizeLinear and DequantizeLinear are defined). On x86 without VNNI
    (AVX2) onnxruntime's int8 kernels, and its fusion of QDQ groups into them, are not exact
    (its u8 × s8 kernels add pairs of products with vpmaddubsw, which saturates at int16; its
    own advice there is 7-bit weights, reduce_range): on an AVX2-only EPYC (Zen 3) a
    QLinearMatMul came out 11 quantization steps from the exact products, mlp_m's fused qdq_u8
    form 4, while nnos's reference, onnx.reference and onnxruntime unoptimized agreed bit for
    bit."""
    if ops(path) & INTEGER_KERNELS:
        from onnx import version_converter
        from onnx.reference import ReferenceEvaluator
        m = onnx.load(path)
        if max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) < 21:
            m = version_converter.convert_version(m, 21)
        return ReferenceEvaluator(m).run(None, feeds)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, feeds)


GRIDS = {"uint8": (TensorProto.UINT8, np.uint8(128)), "int8": (TensorProto.INT8, np.int8(-3))}


def rounded(nodes: list, inits: list, t: str, k: int, dtype: str, scale: float) -> str:
    """``t`` rounded to a grid as a QDQ export rounds it: QuantizeLinear then DequantizeLinear."""
    _, zp = GRIDS[dtype]
    inits += [(f"s{k}", np.array(scale, np.float32)), (f"z{k}", np.array(zp))]
    nodes += [helper.make_node("QuantizeLinear", [t, f"s{k}", f"z{k}"], [f"q{k}"]),
              helper.make_node("DequantizeLinear", [f"q{k}", f"s{k}", f"z{k}"], [f"d{k}"])]
    return f"d{k}"


def qdq_gelu(path, dtype: str = "uint8", shape=(2, 5, 40), per_channel: bool = False) -> str:
    """x rounded, then torch's exported GELU with a rounding after each op: Div(√2), Erf, Add 1,
    Mul by the rounded x, Mul ½."""
    nodes, inits = [], [("sqrt2", np.array(1.4142135, np.float32)), ("one", np.array(1, np.float32)),
                        ("half", np.array(0.5, np.float32))]
    x = rounded(nodes, inits, "x", 0, dtype, 0.04)
    if per_channel:                             # a per-channel grid: a table per channel, not made
        inits[-2:] = [("s0", np.linspace(0.02, 0.06, shape[1]).astype(np.float32)), ("z0", np.full(shape[1], GRIDS[dtype][1]))]
        for n in nodes:
            n.attribute.append(helper.make_attribute("axis", 1))
    nodes.append(helper.make_node("Div", [x, "sqrt2"], ["a"]))
    nodes.append(helper.make_node("Erf", ["a"], ["e"]))
    e = rounded(nodes, inits, "e", 1, dtype, 0.008)
    nodes.append(helper.make_node("Add", [e, "one"], ["p"]))
    p = rounded(nodes, inits, "p", 2, dtype, 0.008)
    nodes.append(helper.make_node("Mul", [x, p], ["m"]))
    m = rounded(nodes, inits, "m", 3, dtype, 0.05)
    nodes.append(helper.make_node("Mul", [m, "half"], ["y"]))
    return save(model(nodes, [vi("x", list(shape))], [vi("y", list(shape))], inits), path)
