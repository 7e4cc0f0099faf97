"""The ONNX backend node cases (the same ones tests/core/test_conformance.py runs on the numpy
reference) on the cpu backend: each case's plan compiled to C, run in a forked child (a crash
in generated code fails the case with its signal), and compared with the numpy reference —
and with onnxruntime where it runs the case — exactly for integers and booleans, to 1e-4
relative for floats (float16: 2e-3), NaN and Inf where the reference has them. A case passes
only when the cpu backend itself runs it: no fallback to numpy counts.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import nnos
from nnos.backends.cpu.toolchain import find_compiler
from nnos.compiler import sample_inputs
from tests.support.child import run_in_child
from tests.support.onnx_cases import (CASES, CONVERTED, LIGHT, case_runs, const_slots, excluded_reason,
                                      onnxruntime_session, rnn_weights, run_oracle)

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")
RUN = [c for c in CASES if not excluded_reason(c)]
if os.environ.get("NNOS_QUICK") == "1":        # one case per op while iterating
    seen: set = set()
    RUN = [c for c in RUN if not (frozenset(n.op_type for n in c.model.graph.node) in seen
                                  or seen.add(frozenset(n.op_type for n in c.model.graph.node)))]


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path_factory.getbasetemp() / "cpu-cache"))


def _close(got, want, name):
    want = np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, got.dtype, want.shape, want.dtype)
    assert got.dtype == want.dtype, (name, got.shape, got.dtype, want.shape, want.dtype)
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{name}: NaN differ")
    np.testing.assert_array_equal(np.isinf(got) & (got > 0), np.isinf(want) & (want > 0), err_msg=f"{name}: +Inf")
    np.testing.assert_array_equal(np.isinf(got) & (got < 0), np.isinf(want) & (want < 0), err_msg=f"{name}: -Inf")
    finite = np.isfinite(want)
    scale = float(np.max(np.abs(want[finite]))) if finite.any() else 1.0
    rtol = 2e-3 if want.dtype == np.float16 else 1e-4
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol * max(scale, 1e-3), err_msg=name)


@pytest.mark.parametrize("case", RUN, ids=[c.name for c in RUN])
def test_node_case_on_cpu(case, tmp_path):
    path = os.path.join(tmp_path, "model.onnx")
    oracle = None
    for plan, feeds, every, _ in case_runs(case, path, const_slots(case)):
        oracle = oracle or onnxruntime_session(path)
        want = {k: np.array(v) for k, v in plan(feeds).items()}
        kind, got = run_in_child(plan, feeds)
        assert kind == "ran", f"the cpu backend refused the plan: {got}"
        for name, ref in want.items():
            _close(got[name], ref, name)
        ort_out = run_oracle(oracle, every, case)
        if ort_out is not None:             # and onnxruntime, where it runs the case
            for spec, ref in zip(plan.outputs, ort_out):
                _close(got[spec.name], np.asarray(ref).astype(want[spec.name].dtype), f"{spec.name} vs onnxruntime")


RNN = [c for c in RUN if {n.op_type for n in c.model.graph.node} & {"GRU", "LSTM"}]


@pytest.mark.parametrize("case", RNN, ids=[c.name for c in RNN])
def test_rnn_case_with_constant_weights_on_cpu(case, tmp_path):
    """W, R, B (and peepholes) frozen, as on a device: the vectorized path (transposed weights,
    combined biases, inline activations)."""
    for plan, feeds, _, _ in case_runs(case, os.path.join(tmp_path, "model.onnx"), rnn_weights(case)):
        want = {k: np.array(v) for k, v in plan(feeds).items()}
        kind, got = run_in_child(plan, feeds)
        assert kind == "ran", got
        for name, ref in want.items():
            _close(got[name], ref, name)


def _model_on_cpu(path):
    plan = nnos.compile(path)
    feeds = sample_inputs(plan, seed=3)
    want = {k: np.array(v) for k, v in plan(feeds).items()}
    kind, got = run_in_child(plan, feeds)
    assert kind == "ran", got
    for name, ref in want.items():
        _close(got[name], ref, name)


@pytest.mark.parametrize("path", CONVERTED, ids=[p.split(os.sep)[-2] for p in CONVERTED])
def test_pytorch_converted_on_cpu(path):
    _model_on_cpu(path)


@pytest.mark.slow
@pytest.mark.parametrize("path", LIGHT, ids=[os.path.basename(p) for p in LIGHT])
def test_light_models_on_cpu(path):
    _model_on_cpu(path)
