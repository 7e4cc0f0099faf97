"""Constant subgraphs fold away at compile time — an exported position embedding (Range, which
nnos does not run, through onnx's reference; CumSum, Sin, Cos) and a causal mask (Trilu); an op
nnos does not run, on run-time values, is refused naming the node; a constant that would be
huge is refused before it is made."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnos
from nnos.errors import CompileError
from tests.support.onnx_cases import onnxruntime_session

T, D = 16, 8


def _model(tmp_path, nodes, consts, name="m.onnx", inputs=None):
    g = helper.make_graph(nodes, "g", inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, D])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    path = str(tmp_path / name)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_position_embedding_and_a_mask_fold_away(tmp_path):
    consts = {"zero": np.array(0, np.int64), "t": np.array(T, np.int64), "one": np.array(1, np.int64),
              "ax0": np.array(0, np.int64), "freq": (1.0 / 10000 ** (np.arange(D) / D)).astype(np.float32),
              "ones": np.ones((T, D), np.float32), "ax": np.array([1], np.int64)}
    nodes = [helper.make_node("Range", ["zero", "t", "one"], ["pos_i"]),                 # 0 … T−1
             helper.make_node("Cast", ["pos_i"], ["pos"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["pos", "ax"], ["pos2"]),
             helper.make_node("Mul", ["pos2", "freq"], ["ang"]),
             helper.make_node("Sin", ["ang"], ["s"]), helper.make_node("Cos", ["ang"], ["c"]),
             helper.make_node("CumSum", ["ones", "ax0"], ["cum"]),                       # 1 … T down the rows
             helper.make_node("Trilu", ["cum"], ["mask"], upper=0),
             helper.make_node("Add", ["s", "c"], ["pe"]), helper.make_node("Mul", ["pe", "mask"], ["pem"]),
             helper.make_node("Add", ["x", "pem"], ["y"])]
    path = _model(tmp_path, nodes, consts)
    plan = nnos.compile(path)
    assert [n.op for n in plan.graph.nodes] == ["Add"], [n.op for n in plan.graph.nodes]
    x = np.random.default_rng(0).standard_normal((T, D)).astype(np.float32)
    np.testing.assert_allclose(plan({"x": x})["y"], onnxruntime_session(path).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_an_op_nnos_does_not_run_on_run_time_values_is_refused_by_name(tmp_path):
    path = _model(tmp_path, [helper.make_node("Hardmax", ["x"], ["y"], name="pick")], {})
    with pytest.raises(CompileError, match="pick.*unsupported op 'Hardmax'"):
        nnos.compile(path)


def test_a_constant_that_would_be_huge_is_refused_before_it_is_made(tmp_path):
    consts = {"zero": np.array(0, np.int64), "big": np.array(1 << 40, np.int64), "one": np.array(1, np.int64)}
    nodes = [helper.make_node("Range", ["zero", "big", "one"], ["r"], name="positions"),
             helper.make_node("Shape", ["r"], ["n"]), helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "nf"], ["y"])]
    with pytest.raises(CompileError, match=r"positions.*Range\(0, 1\.09951e\+12, 1\) on constants"):
        nnos.compile(_model(tmp_path, nodes, consts))
