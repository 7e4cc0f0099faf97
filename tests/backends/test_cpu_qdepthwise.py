"""The depthwise ConvInteger's forms (backends/cpu/qdepthwise.py) — in bytes on AVX-512 VNNI with
VBMI, in exact float sums elsewhere — and the DequantizeLinear chain it runs after its sums (a
QDQ model's depthwise convolution), on every CPU target this machine runs: exactly the numpy
reference."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu import source
from nnos.backends.cpu.toolchain import cpu_features, find_compiler
from tests.support.onnx_models import model, save, vi
from tests.support.quantized import I8, ints

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler"),
              pytest.mark.usefixtures("cpu_cache")]


def _run(plan, feeds, cpu_target):
    """The cpu backend's outputs exactly the reference's; on a native VNNI + VBMI build, the byte
    form's vpermb in the object."""
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    for k, v in plan(feeds).items():
        np.testing.assert_array_equal(exe.outputs[k], v, err_msg=k)
    bytes_form = "#if defined(NNOS_DW_VNNI)" in source(plan)
    if bytes_form and cpu_target == "native" and {"avx512_vnni", "avx512vbmi"} <= cpu_features():
        code = subprocess.run(["objdump", "-d", exe.facts["object"]], capture_output=True, text=True).stdout
        assert "vpermb" in code and "vpdpbusd" in code
    return exe


@pytest.mark.parametrize("c,hw,kernel,stride,pad", [
    (6, 33, 3, 1, 1),          # rows of two vectors and a part-filled one
    (5, 17, 3, 2, 1),          # stride 2, a row of 9
    (4, 20, 5, 2, 2),          # 5×5: two words a window row
    (3, 16, 5, 1, 2),          # 5×5 at stride 1, a row of one vector
    (2, 13, 7, 1, 3),          # 7×7
    (3, 6, 3, 1, 0),           # rows of 4: four rows a vector
    (4, 16, 5, 2, 2),          # rows of 8 at stride 2: two rows a vector, their windows 60 bytes of a load
    (3, 8, 3, 1, 1),           # rows of 8: two a vector
    (2, 4, 3, 2, 1)])          # rows of 2, two of them: a part-filled vector a row
@pytest.mark.parametrize("x_dt,w_dt", [("uint8", "int8"), ("int8", "uint8")])
def test_a_depthwise_conv_integer_in_bytes(tmp_path, cpu_target, c, hw, kernel, stride, pad, x_dt, w_dt):
    """Centred weights that fit int8 (int8 without a zero point; uint8 about 128): the byte form
    where the target has it, with the input's zero point in the border and an int8 input flipped
    — exactly the reference, two images, the inputs at both ends of their type."""
    rng = np.random.default_rng(c * hw + kernel)
    x_dt, w_dt = np.dtype(x_dt), np.dtype(w_dt)
    w = ints(w_dt, (c, 1, kernel, kernel), rng)
    w[0] = np.iinfo(w_dt).min                        # −128 (int8) or 0 − 128: the most negative centred weight
    inits = [("w", w), ("xz", np.array(7 if x_dt == np.uint8 else -5, x_dt))]
    names = ["x", "w", "xz"]
    if w_dt == np.uint8:
        inits.append(("wz", np.full(c, 128, np.uint8)))
        names.append("wz")
    node = helper.make_node("ConvInteger", names, ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                            pads=[pad] * 4, group=c)
    out = (hw + 2 * pad - kernel) // stride + 1
    mdl = model([node], [vi("x", [2, c, hw, hw], I8[x_dt])], [vi("y", [2, c, out, out], TensorProto.INT32)], inits,
                opset=13)
    plan = nnos.compile(save(mdl, tmp_path / "dw.onnx"))
    src = source(plan)
    assert ("#if defined(NNOS_DW_VNNI)" in src) == src.startswith("#define NNOS_VW 16\n")   # 16-float vectors' form
    x = ints(x_dt, (2, c, hw, hw), rng)
    x[0, 0] = np.iinfo(x_dt).max                     # against channel 0's −128s
    exe = _run(plan, {"x": x}, cpu_target)
    assert np.abs(exe.outputs["y"]).max() > 128 * 128 * kernel
    exe.close()


def test_weights_past_int8_or_dilated_taps_keep_the_exact_float_form(tmp_path, cpu_target):
    """A centred weight of 255 does not fit the byte form's int8, nor does a dilated window its
    runs of four taps: the exact float form alone, still the reference."""
    rng = np.random.default_rng(3)
    w = ints(np.dtype(np.uint8), (3, 1, 3, 3), rng)
    w[0, 0, 0, 0] = 255
    for dil, wz in ((1, 0), (2, 128)):
        node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], kernel_shape=[3, 3], pads=[2] * 4,
                                dilations=[dil, dil], group=3)
        out = 12 + 4 - 2 * dil
        mdl = model([node], [vi("x", [1, 3, 12, 12], TensorProto.UINT8)], [vi("y", [1, 3, out, out], TensorProto.INT32)],
                    [("w", w), ("xz", np.array(3, np.uint8)), ("wz", np.full(3, wz, np.uint8))], opset=13)
        plan = nnos.compile(save(mdl, tmp_path / f"dw{dil}.onnx"))
        assert "NNOS_DW_VNNI" not in source(plan) and "(float)((int32_t)xc[y * " in source(plan)
        _run(plan, {"x": ints(np.dtype(np.uint8), (1, 3, 12, 12), rng)}, cpu_target).close()


def _qdq_depthwise(c: int, kernel: int, stride: int, then: str, rng):
    """DequantizeLinear(x) → depthwise Conv (int8 weights, a scale per channel, a bias) → ReLU →
    QuantizeLinear (the output, ``then`` "quantize"), or the float ReLU ("float"), or plus a
    residual input ("residual"): onnxruntime's QDQ form of a MobileNet block's middle."""
    pad, hw = kernel // 2, 16
    out_hw = (hw + 2 * pad - kernel) // stride + 1
    nodes = [helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "b"], ["conv"], kernel_shape=[kernel, kernel],
                              strides=[stride, stride], pads=[pad] * 4, group=c),
             helper.make_node("Relu", ["conv"], ["r"])]
    inputs = [vi("xq", [2, c, hw, hw], TensorProto.UINT8)]
    out = vi("y", [2, c, out_hw, out_hw], TensorProto.UINT8 if then == "quantize" else TensorProto.FLOAT)
    if then == "quantize":
        nodes.append(helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["y"]))
    elif then == "float":
        nodes[-1].output[0] = "y"
    else:
        nodes.append(helper.make_node("Add", ["r", "skip"], ["y"]))
        inputs.append(vi("skip", [2, c, out_hw, out_hw]))
    inits = [("xs", np.array(0.03, np.float32)), ("xz", np.array(9, np.uint8)),
             ("wq", ints(np.dtype(np.int8), (c, 1, kernel, kernel), rng)),
             ("ws", rng.uniform(0.002, 0.02, c).astype(np.float32)), ("wz", np.zeros(c, np.int8)),
             ("b", rng.standard_normal(c).astype(np.float32)),
             ("ys", np.array(0.05, np.float32)), ("yz", np.array(0, np.uint8))]
    return model(nodes, inputs, [out], inits, opset=13), out_hw


@pytest.mark.parametrize("kernel,stride", [(3, 1), (5, 2)])
@pytest.mark.parametrize("then", ["quantize", "float", "residual"])
def test_a_qdq_depthwise_conv_runs_its_dequantize_chain(tmp_path, cpu_target, kernel, stride, then):
    """A QDQ depthwise convolution is a depthwise ConvInteger and the DequantizeLinear of its sums
    with the bias and the ReLU chained (passes/quant.py); the ConvInteger's step runs that chain
    too, storing the QuantizeLinear's bytes or the floats — not with a residual input (a tensor
    the chain reads whole): then the chain is its own step. Exactly the reference."""
    rng = np.random.default_rng(kernel * 10 + stride)
    c = 24
    mdl, out_hw = _qdq_depthwise(c, kernel, stride, then, rng)
    plan = nnos.compile(save(mdl, tmp_path / "qdq_dw.onnx"))
    ops = [n.op for n in plan.graph.nodes]
    conv = plan.graph.nodes[ops.index("ConvInteger")]
    assert int(conv.attrs["group"]) == c and ops[ops.index("ConvInteger") + 1] == "DequantizeLinear"
    src = source(plan)
    assert ("'s DequantizeLinear" in src) == (then != "residual")
    assert ("stored as step" in src) == (then == "quantize")
    feeds = {"xq": ints(np.dtype(np.uint8), (2, c, 16, 16), rng)}
    if then == "residual":
        feeds["skip"] = rng.standard_normal((2, c, out_hw, out_hw)).astype(np.float32)
    exe = _run(plan, feeds, cpu_target)
    if then == "quantize":
        assert exe.outputs["y"].max() == 255 and (exe.outputs["y"] == 0).any()
    exe.close()
