"""The ONNX backend node cases (the same ones tests/core/test_conformance.py runs on the numpy
reference) on the cpu backend: each case's plan compiled to C, run in a forked child (a crash
in generated code fails the case with its signal), and compared with the numpy reference —
and with onnxruntime where it runs the case — exactly for integers and booleans, to 1e-4
relative for floats (float16: 2e-3), NaN and Inf where the reference has them. A case passes only when the cpu backend itself runs it: no
fallback to numpy counts.
"""
from __future__ import annotations

import multiprocessing
import os

import numpy as np
import onnx
import pytest

import nnos
from nnos.backends import prepare
from nnos.backends.cpu.compiler import find_compiler
from nnos.compiler import sample_inputs
from nnos.ops import OPS
from tests.core.test_conformance import CASES, _array, _excluded_reason, _onnxruntime, _run_oracle
from tests.core.test_real_models import CONVERTED, LIGHT

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")
RUN = [c for c in CASES if not _excluded_reason(c)]
if os.environ.get("NNOS_QUICK") == "1":        # one case per op while iterating
    seen: set = set()
    RUN = [c for c in RUN if not (frozenset(n.op_type for n in c.model.graph.node) in seen
                                  or seen.add(frozenset(n.op_type for n in c.model.graph.node)))]


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path_factory.getbasetemp() / "cpu-cache"))


def _child(conn, plan_bytes, feeds):
    try:
        exe = prepare(nnos.Plan.from_bytes(plan_bytes), "cpu")
    except Exception as e:                      # noqa: BLE001 - reported to the parent
        conn.send(("refused", str(e)))
        return
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    conn.send(("ran", {k: np.array(v) for k, v in exe.outputs.items()}))


def _run_in_child(plan, feeds):
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(child, plan.to_bytes(), feeds))
    p.start()
    child.close()
    try:            # read before joining: a large result fills the pipe until it is read
        result = parent.recv() if parent.poll(120) else None
    except EOFError:
        result = None
    p.join(10)
    if p.exitcode != 0 or result is None:
        raise AssertionError(f"the generated code's child exited with {p.exitcode}")
    return result


def _close(got, want, name):
    want = np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, got.dtype, want.shape, want.dtype)
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
    onnx.save(case.model, path)
    inits = {t.name for t in case.model.graph.initializer}
    names = [i.name for i in case.model.graph.input if i.name not in inits]
    const_slots = {n.input[k] for n in case.model.graph.node if n.op_type in OPS
                   for k in OPS[n.op_type].const_inputs if k < len(n.input)}
    oracle = _onnxruntime(path)
    for ins, _ in case.data_sets:
        freeze = {n: _array(v) for n, v in zip(names, ins) if n in const_slots}
        plan = nnos.compile(path, check=False, freeze=freeze)
        feeds = {n: _array(v) for n, v in zip(names, ins) if n not in freeze}
        want = {k: np.array(v) for k, v in plan(feeds).items()}
        kind, got = _run_in_child(plan, feeds)
        assert kind == "ran", f"the cpu backend refused the plan: {got}"
        for name, ref in want.items():
            _close(got[name], ref, name)
        ort_out = _run_oracle(oracle, {n: _array(v) for n, v in zip(names, ins)})
        if ort_out is not None:             # and onnxruntime, where it runs the case
            for spec, ref in zip(plan.outputs, ort_out):
                _close(got[spec.name], np.asarray(ref).astype(want[spec.name].dtype), f"{spec.name} vs onnxruntime")


RNN = [c for c in RUN if {n.op_type for n in c.model.graph.node} & {"GRU", "LSTM"}]


@pytest.mark.parametrize("case", RNN, ids=[c.name for c in RNN])
def test_rnn_case_with_constant_weights_on_cpu(case, tmp_path):
    """W, R, B (and peepholes) frozen, as on a device: the vectorized path (transposed weights,
    combined biases, inline activations)."""
    path = os.path.join(tmp_path, "model.onnx")
    onnx.save(case.model, path)
    node = case.model.graph.node[0]
    weights = {node.input[i] for i in (1, 2, 3, 4, 7) if i < len(node.input) and node.input[i]}
    inits = {t.name for t in case.model.graph.initializer}
    names = [i.name for i in case.model.graph.input if i.name not in inits]
    for ins, _ in case.data_sets:
        plan = nnos.compile(path, check=False, freeze={n: _array(v) for n, v in zip(names, ins) if n in weights})
        feeds = {n: _array(v) for n, v in zip(names, ins) if n not in weights}
        want = {k: np.array(v) for k, v in plan(feeds).items()}
        kind, got = _run_in_child(plan, feeds)
        assert kind == "ran", got
        for name, ref in want.items():
            _close(got[name], ref, name)


@pytest.mark.parametrize("path", CONVERTED, ids=[p.split(os.sep)[-2] for p in CONVERTED])
def test_pytorch_converted_on_cpu(path):
    plan = nnos.compile(path)
    feeds = {s.name: v for s, v in zip(plan.inputs, sample_inputs(plan, seed=3).values())}
    want = {k: np.array(v) for k, v in plan(feeds).items()}
    kind, got = _run_in_child(plan, feeds)
    assert kind == "ran", got
    for name, ref in want.items():
        _close(got[name], ref, name)


@pytest.mark.slow
@pytest.mark.parametrize("path", LIGHT, ids=[os.path.basename(p) for p in LIGHT])
def test_light_models_on_cpu(path):
    plan = nnos.compile(path)
    feeds = sample_inputs(plan, seed=3)
    want = {k: np.array(v) for k, v in plan(feeds).items()}
    kind, got = _run_in_child(plan, feeds)
    assert kind == "ran", got
    for name, ref in want.items():
        _close(got[name], ref, name)
