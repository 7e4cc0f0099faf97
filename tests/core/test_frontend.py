"""ONNX import: external data, symbolic dims, freezing, opset handling and every refusal."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.frontend import import_onnx
from tests.support.onnx_models import assert_close
from tests.support.onnx_models import model, rand, save, vi


def _mlp(batch="batch"):
    w, b = rand(8, 16), rand(16, seed=1)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    return model(nodes, [vi("x", [batch, 8])], [vi("y", [batch, 16])], [("w", w), ("b", b)])


def test_external_data_beside_the_model(tmp_path, ort_session):
    m = _mlp()
    path = str(tmp_path / "ext.onnx")
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    assert os.path.getsize(tmp_path / "ext.onnx.data") >= (8 * 16 + 16) * 4
    plan = nnos.compile(path)
    x = rand(1, 8, seed=3)
    assert_close(plan({"x": x})["y"], ort_session(path).run(None, {"x": x})[0])


def test_missing_external_data_is_a_clear_error(tmp_path):
    m = _mlp()
    path = str(tmp_path / "ext.onnx")
    onnx.save_model(m, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    os.remove(tmp_path / "w.bin")
    with pytest.raises(nnos.ModelError, match="ext.onnx"):
        nnos.compile(path)


@pytest.mark.parametrize("batch", [1, 4])
def test_symbolic_batch_is_fixed(tmp_path, batch):
    plan = nnos.compile(save(_mlp(), tmp_path / "m.onnx"), batch=batch)
    assert plan.inputs[0].shape == (batch, 8)
    assert plan.outputs[0].shape == (batch, 16)


def test_other_symbolic_dim_needs_a_value(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["batch", "seq"])], [vi("y", ["batch", "seq"])])
    path = save(m, tmp_path / "m.onnx")
    with pytest.raises(nnos.ModelError, match=r"dimension 1 is dynamic \('seq'\).*--dim seq=N"):
        nnos.compile(path)
    assert nnos.compile(path, dims={"seq": 5}).inputs[0].shape == (1, 5)


def test_torch_style_shape_subgraph_is_folded(tmp_path, ort_session):
    # x -> Shape -> Gather(0) -> Unsqueeze -> Concat(-1) -> Reshape: what torch exports for view(b, -1)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["r", "shape"], ["y"]),
    ]
    inits = [("zero", np.array(0, np.int64)), ("axes", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64))]
    path = save(model(nodes, [vi("x", ["batch", 2, 3, 4])], [vi("y", ["batch", 24])], inits), tmp_path / "m.onnx")
    plan = nnos.compile(path)
    assert [n.op for n in plan.graph.nodes] == ["Relu", "Reshape"], "Shape/Gather/Unsqueeze/Concat must fold"
    x = rand(1, 2, 3, 4)
    assert_close(plan({"x": x})["y"], ort_session(path).run(None, {"x": x})[0])


def test_old_opset_is_upgraded(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 3])], [vi("y", [1, 3])], opset=9)
    graph, info = import_onnx(save(m, tmp_path / "m.onnx"))
    assert info["opset"] == 9
    assert graph.nodes[0].op == "Relu"


def test_freeze_turns_an_input_into_a_constant(tmp_path):
    m = model([helper.make_node("Reshape", ["x", "s"], ["y"])], [vi("x", [2, 6]), vi("s", [2], TensorProto.INT64)],
              [vi("y", [3, 4])])
    path = save(m, tmp_path / "m.onnx")
    with pytest.raises(nnos.CompileError, match="must be a constant known at compile time"):
        nnos.compile(path)
    plan = nnos.compile(path, freeze={"s": np.array([3, 4])})
    assert [s.name for s in plan.inputs] == ["x"]
    assert plan.outputs[0].shape == (3, 4)
    with pytest.raises(nnos.ModelError, match="cannot freeze"):
        nnos.compile(path, freeze={"nope": np.array([1])})


# --- refusals -------------------------------------------------------------------------------
def test_truncated_protobuf(tmp_path, zoo):
    data = open(zoo["mlp_s"], "rb").read()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(nnos.ModelError, match="cut.onnx"):
        nnos.compile(str(path))


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(nnos.ModelError, match="noise.onnx"):
        nnos.compile(str(path))


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(nnos.ModelError, match="holds no graph"):
        nnos.compile(str(tmp_path / "empty.onnx"))
    with pytest.raises(nnos.ModelError, match="no such model file"):
        nnos.compile(str(tmp_path / "absent.onnx"))


def test_unsupported_op_names_node_and_op(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Hardmax", ["r"], ["y"], name="the_hardmax")],
              [vi("x", [1, 3])], [vi("y", [1, 3])])
    with pytest.raises(nnos.CompileError, match=r"node 'the_hardmax' \(op Hardmax\): unsupported op 'Hardmax'"):
        nnos.compile(save(m, tmp_path / "m.onnx"))


def test_dynamic_shape_is_refused_with_the_node(tmp_path):
    # the target shape is computed from a run-time input: a data-dependent shape
    nodes = [helper.make_node("Cast", ["n"], ["s"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["x", "s"], ["y"], name="dyn")]
    m = model(nodes, [vi("x", [2, 6]), vi("n", [2])], [vi("y", [3, 4])])
    with pytest.raises(nnos.CompileError, match=r"node 'dyn' \(op Reshape\).*dynamic"):
        nnos.compile(save(m, tmp_path / "m.onnx"))


def test_unsupported_dtype_is_named(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 3], TensorProto.BFLOAT16)],
              [vi("y", [1, 3], TensorProto.BFLOAT16)])
    with pytest.raises(nnos.ModelError, match="input 'x': dtype bfloat16 is not supported"):
        nnos.compile(save(m, tmp_path / "m.onnx"))


def test_bad_attribute_is_a_compile_error_not_a_traceback(tmp_path):
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], name="c", kernel_shape=[3, 3], strides=[1])],
              [vi("x", [1, 1, 5, 5])], [vi("y", [1, 1, 3, 3])], [("w", rand(1, 1, 3, 3))])
    with pytest.raises(nnos.CompileError, match=r"node 'c' \(op Conv\)"):
        nnos.compile(save(m, tmp_path / "m.onnx"))
