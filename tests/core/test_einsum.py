"""Einsum as transformers export it — attention scores per head, broadcast batch dims through
"...", implicit outputs — on the reference and the cpu backend against onnxruntime; equations
that do not fit their inputs are refused naming the axis."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.errors import CompileError
from tests.support.onnx_cases import onnxruntime_session


def _model(tmp_path, eq: str, shapes: list[tuple]) -> str:
    names = [f"x{k}" for k in range(len(shapes))]
    g = helper.make_graph([helper.make_node("Einsum", names, ["y"], equation=eq, name="contract")], "e",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    path = str(tmp_path / "e.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("eq,shapes", [
    ("bhqd,bhkd->bhqk", [(2, 4, 5, 8), (2, 4, 6, 8)]),            # attention scores
    ("bhqk,bhkd->bhqd", [(2, 4, 5, 6), (2, 4, 6, 8)]),            # … times the values
    ("...ij,...jk->...ik", [(3, 1, 4, 5), (1, 2, 5, 6)]),         # batch dims broadcast through "..."
    ("ij,jk", [(4, 5), (5, 3)]),                                   # implicit output: "ik"
    ("bid,od->bio", [(2, 7, 16), (32, 16)]),                       # a projection written as einsum
])
def test_transformer_contractions_match_onnxruntime(tmp_path, eq, shapes):
    path = _model(tmp_path, eq, shapes)
    rng = np.random.default_rng(0)
    feeds = {f"x{k}": rng.standard_normal(s).astype(np.float32) for k, s in enumerate(shapes)}
    want = onnxruntime_session(path).run(None, feeds)[0]
    plan = nnos.compile(path)
    for backend in ("numpy", "cpu"):
        exe = plan.bind(backend)
        for k, v in feeds.items():
            exe.inputs[k][...] = v
        exe.run()
        np.testing.assert_allclose(exe.outputs["y"], want, rtol=1e-5, atol=1e-5, err_msg=backend)


@pytest.mark.parametrize("eq,shapes,message", [
    ("ij,jk->ik", [(4, 5), (6, 3)], "axis 'j' is 5 in one input and 6 in another"),
    ("ij,jk->iz", [(4, 5), (5, 3)], "the output names \\['z'\\]"),
    ("ijk,jk->ik", [(4, 5), (5, 3)], "term 'ijk' names 3 axes of a rank-2 input"),
])
def test_equations_that_do_not_fit_are_refused(tmp_path, eq, shapes, message):
    with pytest.raises(CompileError, match=f"contract.*{message}"):
        nnos.compile(_model(tmp_path, eq, shapes))
