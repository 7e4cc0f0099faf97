"""The zoo's PyTorch exports (models/zoo/export.py, committed): an ACT-shaped transformer policy
from both of torch's exporters, a MobileNetV2-style depthwise policy and a residual policy with
5×5 convolutions. Each compiles (its constant position embedding folded away), runs on the
numpy reference and the cpu backend — run twice on inputs written once — and matches
onnxruntime; a float16 copy runs on the cpu backend within float16's tolerance."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import nnos
from nnos.backends import prepare
from nnos.backends.cpu.toolchain import find_compiler
from nnos.backends.verify import TOLERANCE
from tests.support.onnx_models import save, to_float16
from tests.support.paths import ROOT

ZOO = os.path.join(ROOT, "models", "zoo")
EXPORTS = ["act_s.onnx", "act_s.dynamo.onnx", "mbv2_s.onnx", "res5_s.onnx"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path_factory.getbasetemp() / "cpu-cache"))


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((1, 3, 64, 64)).astype(np.float32),
            "state": rng.standard_normal((1, 6)).astype(np.float32)}


def _ort(path, feeds):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_the_act_policy_has_the_real_structure():
    m = onnx.load(os.path.join(ZOO, "act_s.onnx"))
    ops = {n.op_type for n in m.graph.node}
    # GELU as Erf; the sine embedding as CumSum, Sin and Cos over constants
    assert {"Conv", "Erf", "Softmax", "MatMul", "LayerNormalization", "CumSum", "Sin", "Cos"} <= ops, ops
    d = onnx.load(os.path.join(ZOO, "act_s.dynamo.onnx"))
    assert {"Gelu", "LayerNormalization"} <= {n.op_type for n in d.graph.node} and d.opset_import[0].version >= 20


def test_the_act_policy_s_layers_have_their_own_weights(tmp_path):
    """Each transformer layer has its own weights, as a trained policy's (torch's encoder and
    decoder start their layers as copies of one: the exporter then shared the copies' weights
    through Identity nodes, and onnxruntime's dynamic quantizer left those layers' products in
    float): no Identity in either export, and quantize_dynamic makes every product of a
    constant weight an integer one."""
    from nnos_models.zoo.quantize import quantized
    for name in ("act_s.onnx", "act_s.dynamo.onnx"):
        assert "Identity" not in {n.op_type for n in onnx.load(os.path.join(ZOO, name)).graph.node}, name
    m = onnx.load(quantized(os.path.join(ZOO, "act_s.onnx"), str(tmp_path / "dynamic.onnx"), "dynamic"))
    weights = {i.name for i in m.graph.initializer}
    assert not [n.name for n in m.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
    assert sum(n.op_type == "MatMulInteger" for n in m.graph.node) == 17   # state 1, encoder 2 × 4, decoder 7, head 1


@pytest.mark.parametrize("name", EXPORTS)
def test_an_export_compiles_and_matches_onnxruntime(name):
    path = os.path.join(ZOO, name)
    plan = nnos.compile(path)
    assert not {"CumSum", "Range", "Sin", "Cos"} & set(plan.graph.op_counts())    # folded at compile time
    feeds = _feeds()
    want = _ort(path, feeds)
    got = plan(feeds)["actions"]
    assert got.shape == want.shape == ((1, 20, 6) if name.startswith("act") else (1, 6))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")
@pytest.mark.parametrize("name", EXPORTS)
def test_an_export_runs_on_the_cpu_backend(name):
    path = os.path.join(ZOO, name)
    plan = nnos.compile(path)
    exe = prepare(plan, "auto")
    assert exe.backend == "cpu", exe.choice
    for seed in (0, 1):
        feeds = _feeds(seed)
        for k, v in feeds.items():
            np.copyto(exe.inputs[k], v)
        want = _ort(path, feeds)
        for _ in range(2):                         # the second run: inputs not written again
            exe.run()
            np.testing.assert_allclose(exe.outputs["actions"], want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")
def test_the_act_policy_in_float16(tmp_path):
    path = save(to_float16(onnx.load(os.path.join(ZOO, "act_s.onnx"))), tmp_path / "act16.onnx")
    plan = nnos.compile(path)
    exe = prepare(plan, "auto")
    assert exe.backend == "cpu" and plan.inputs[0].dtype == np.float16, exe.choice
    feeds = {k: v.astype(np.float16) for k, v in _feeds().items()}
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    want = _ort(path, feeds).astype(np.float64)
    tol = TOLERANCE["float16"]
    np.testing.assert_allclose(exe.outputs["actions"], want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))
