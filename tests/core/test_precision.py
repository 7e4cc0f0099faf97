"""Float16 models (passes/precision.py): compiled to compute in float32 inside, float16 at the
edges (or float32 throughout with --precision fp32), run by the cpu backend — never the numpy
fallback — and within the stated float16 tolerance of onnxruntime running the model in float16."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu.toolchain import find_compiler
from nnos.backends.verify import TOLERANCE
from nnos.errors import CompileError
from nnos_models.zoo.build import MODELS
from tests.support.onnx_models import model, save, to_float16, vi
from tests.support.paths import ROOT

HALF = np.dtype(np.float16)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path_factory.getbasetemp() / "cpu-cache"))


def _ort(path, feeds):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def _feeds(plan, dtype, seed=0):
    return {t.name: np.random.default_rng(seed).standard_normal(t.shape).astype(dtype) for t in plan.inputs}


def _close(got, want):
    """float16's stated tolerance, relative to the output's magnitude (at least 1)."""
    want = np.asarray(want, np.float64)
    atol = TOLERANCE["float16"] * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=TOLERANCE["float16"], atol=atol)


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")
@pytest.mark.parametrize("name", ["mlp_m", "cnn_s", "gru_s"])
def test_a_float16_model_runs_on_the_cpu_backend_in_float32_inside(tmp_path, name):
    path = save(to_float16(MODELS[name]()), tmp_path / f"{name}16.onnx")
    plan = nnos.compile(path)
    assert plan.meta["precision"] == "fp32-compute" and plan.meta["self_check"]["rtol_for"] == "float16"
    assert all(t.dtype == HALF for t in plan.inputs + plan.outputs)
    inside = [n for n, t in plan.graph.types.items() if t.dtype == HALF and n not in plan.graph.inputs + plan.graph.outputs]
    assert not inside, inside                           # float32 kernels between the edge casts
    exe = prepare(plan, "auto")
    assert exe.backend == "cpu", exe.choice             # regression: fell back to numpy on its self-check
    feeds = _feeds(plan, np.float16)
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    for out, want in zip(plan.outputs, _ort(path, feeds)):
        _close(exe.outputs[out.name], want)


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")
def test_the_model_s_own_float16_arithmetic_also_runs_on_the_cpu_backend(tmp_path):
    """precision "model": float16 everywhere, each op rounded as numpy rounds (the generic
    kernels); the cpu backend passes its check against the reference with float16's tolerance."""
    path = save(to_float16(MODELS["mlp_m"]()), tmp_path / "m16.onnx")
    plan = nnos.compile(path, precision="model")
    assert sum(t.dtype == HALF for t in plan.graph.types.values()) > 2
    exe = prepare(plan, "auto")
    assert exe.backend == "cpu", exe.choice


def test_fp32_precision_takes_and_gives_float32(tmp_path):
    path = save(to_float16(MODELS["cnn_s"]()), tmp_path / "c16.onnx")
    plan = nnos.compile(path, precision="fp32")
    assert all(t.dtype == np.float32 for t in plan.inputs + plan.outputs)
    assert not [n for n, t in plan.graph.types.items() if t.dtype == HALF]
    feeds = _feeds(plan, np.float32)
    got = plan(feeds)
    for out, want in zip(plan.outputs, _ort(path, {k: v.astype(np.float16) for k, v in feeds.items()})):
        _close(got[out.name], want)


def test_a_rounding_the_model_asks_for_is_kept(tmp_path):
    """A float32 model that rounds through float16 on purpose (Cast to float16 and back, and a
    CastLike to a float16 constant): the plan rounds exactly there, bit for bit."""
    nodes = [helper.make_node("Mul", ["X", "k"], ["A"]), helper.make_node("Cast", ["A"], ["H"], to=TensorProto.FLOAT16),
             helper.make_node("Add", ["H", "h1"], ["H2"]), helper.make_node("Cast", ["H2"], ["B"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["B", "k"], ["C"]), helper.make_node("CastLike", ["C", "h1"], ["D"]),
             helper.make_node("Cast", ["D"], ["Y"], to=TensorProto.FLOAT)]
    m = model(nodes, [vi("X", [1, 64])], [vi("Y", [1, 64])],
              [("k", np.float32(1.0001)), ("h1", np.array(0.5, np.float16))])
    plan = nnos.compile(save(m, tmp_path / "r.onnx"))
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32) * 100
    h = ((x * np.float32(1.0001)).astype(np.float16) + np.float16(0.5)).astype(np.float32)
    want = (h * np.float32(1.0001)).astype(np.float16).astype(np.float32)
    assert np.array_equal(plan({"X": x})["Y"], want)          # (onnxruntime rounds elsewhere: ±1 ulp)


def test_an_unknown_precision_is_refused_by_name(tmp_path):
    path = save(to_float16(MODELS["mlp_s"]()), tmp_path / "s16.onnx")
    with pytest.raises(CompileError, match="precision 'fp8'"):
        nnos.compile(path, precision="fp8")


def test_nnos_compile_precision_fp32(tmp_path):
    path = save(to_float16(MODELS["mlp_s"]()), tmp_path / "s16.onnx")
    out = tmp_path / "s.plan"
    r = subprocess.run([sys.executable, "-m", "nnos.cli", "compile", path, "-o", str(out), "--precision", "fp32",
                        "--backend", "numpy"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    plan = nnos.load(str(out))
    assert plan.meta["precision"] == "fp32" and plan.inputs[0].dtype == np.float32
