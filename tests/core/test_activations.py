"""Erf and GELU as torch exports them: erf over the whole line against math.erf (float32 and
float64), and torch's GELU pattern x·0.5·(1 + erf(x / √2)) inside a layer — fused into one
elementwise chain on the cpu backend — against onnxruntime."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnos
from tests.support.onnx_cases import onnxruntime_session


def _unary(tmp_path, op: str, dtype, n: int, **attrs) -> str:
    t = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}[dtype]
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], op,
                          [helper.make_tensor_value_info("x", t, [n])], [helper.make_tensor_value_info("y", t, [n])])
    path = str(tmp_path / f"{op}.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), path)
    return path


# float32: A&S 7.1.26 (1.5e-7) plus the rounding of its ~15 float32 steps; libm erff is closer
@pytest.mark.parametrize("dtype,tol", [(np.float32, 5e-7), (np.float64, 1e-15)])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_erf_over_the_whole_line(tmp_path, dtype, tol, backend):
    x = np.concatenate([np.linspace(-6, 6, 4001), [-40.0, -9.5, -1e-30, 0.0, 1e-30, 9.5, 40.0]]).astype(dtype)
    exe = nnos.compile(_unary(tmp_path, "Erf", dtype, x.size)).bind(backend)
    exe.inputs["x"][...] = x
    exe.run()
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.abs(exe.outputs["y"] - want).max() <= tol
    assert np.all(np.signbit(exe.outputs["y"]) == np.signbit(x))           # odd, ±0 included


def test_torch_gelu_pattern_in_a_layer_fuses_and_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32) * 0.2, "w")
    consts = [w, numpy_helper.from_array(np.array(math.sqrt(2), np.float32), "r2"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Div", ["h", "r2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["h", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"]),
             helper.make_node("Gelu", ["h"], ["g"], approximate="tanh")]
    g = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 256]),
                           helper.make_tensor_value_info("g", TensorProto.FLOAT, [8, 256])], consts)
    path = str(tmp_path / "gelu.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), path)
    plan = nnos.compile(path)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    want = onnxruntime_session(path).run(None, {"x": x})
    for backend in ("numpy", "cpu"):
        exe = plan.bind(backend)
        exe.inputs["x"][...] = x
        exe.run()
        np.testing.assert_allclose(exe.outputs["y"], want[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(exe.outputs["g"], want[1], rtol=1e-5, atol=1e-5)
    assert len(plan.graph.nodes) < len(nodes), [n.op for n in plan.graph.nodes]      # the chain fused
