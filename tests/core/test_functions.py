"""ONNX ops defined as functions (frontend/functions.py): Attention (opset 23) runs as its ONNX
definition; an op nnos has a kernel for is never expanded; what a definition needs and nnos
lacks is named. (The ONNX node cases of Attention run in test_conformance.py.)"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.errors import NnosError
from nnos.frontend import import_onnx
from nnos.ops import OPS
from tests.support.onnx_models import model, rand, save, vi


def _attention(tmp_path, **attrs):
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], **attrs)
    m = model([node], [vi("Q", [1, 4, 10, 8]), vi("K", [1, 4, 12, 8]), vi("V", [1, 4, 12, 8])], [vi("Y", [1, 4, 10, 8])],
              opset=23)
    return save(m, tmp_path / "att.onnx")


@pytest.mark.parametrize("attrs", [{}, {"is_causal": 1}, {"scale": 0.5, "softcap": 3.0}])
def test_attention_runs_as_its_onnx_definition(tmp_path, attrs):
    path = _attention(tmp_path, **attrs)
    plan = nnos.compile(path)
    assert "Attention" not in plan.meta["ops"] and {"MatMul", "Softmax"} <= set(plan.meta["ops"])
    feeds = {"Q": rand(1, 4, 10, 8, seed=1), "K": rand(1, 4, 12, 8, seed=2), "V": rand(1, 4, 12, 8, seed=3)}
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(plan(feeds)["Y"], want, rtol=1e-4, atol=1e-5)


def test_an_op_with_a_kernel_is_not_expanded(tmp_path):
    """LayerNormalization has an ONNX definition too; nnos runs its own kernel."""
    node = helper.make_node("LayerNormalization", ["X", "S"], ["Y"])
    path = save(model([node], [vi("X", [2, 16])], [vi("Y", [2, 16])], [("S", rand(16))]), tmp_path / "ln.onnx")
    graph, _ = import_onnx(path, known_ops=set(OPS))
    assert [n.op for n in graph.nodes] == ["LayerNormalization"]


def test_the_source_hash_is_the_model_s_not_the_expansion_s(tmp_path):
    path = _attention(tmp_path)
    _, plain = import_onnx(path)
    graph, expanded = import_onnx(path, known_ops=set(OPS))
    assert plain["source_sha256"] == expanded["source_sha256"] and len(graph.nodes) > 5


def test_what_a_definition_needs_and_nnos_lacks_is_named(tmp_path):
    """Attention in bfloat16: the expansion works, the dtype is refused by name."""
    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"])
    m = model([node], [vi(n, [1, 2, 4, 8], TensorProto.BFLOAT16) for n in "QKV"], [vi("Y", [1, 2, 4, 8], TensorProto.BFLOAT16)],
              opset=23)
    with pytest.raises(NnosError, match="bfloat16"):
        nnos.compile(save(m, tmp_path / "bf.onnx"))
