"""The numpy backend against onnxruntime (the oracle), allocation-free calls, determinism and
call-time refusals."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import nnos
from nnos.compiler import sample_inputs
from tests.support.onnx_models import assert_close

ZOO = ["mlp_s", "mlp_m", "cnn_s", "gru_s", "cnn_l"]


@pytest.mark.parametrize("name", ZOO)
def test_matches_onnxruntime(zoo, ort_session, name):
    plan = nnos.compile(zoo[name])
    sess = ort_session(zoo[name])
    for seed in range(3):
        feeds = sample_inputs(plan, seed)
        ref = sess.run(None, feeds)
        got = plan(feeds)
        for spec, r in zip(plan.outputs, ref):
            assert_close(got[spec.name], r, rtol=1e-5)


@pytest.mark.parametrize("name", ZOO)
def test_calls_allocate_no_arrays(zoo, name):
    plan = nnos.compile(zoo[name], check=False)
    exe = plan.bind("numpy")
    for k, v in sample_inputs(plan).items():
        np.copyto(exe.inputs[k], v)
    feeds = sample_inputs(plan, 1)
    exe.run()
    plan(feeds)
    numpy_domain = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces([numpy_domain])
        for _ in range(1000):
            exe.run()
        for _ in range(1000):
            plan(feeds)                       # the dict API too: inputs copied into the arena
        after = tracemalloc.take_snapshot().filter_traces([numpy_domain])
    finally:
        tracemalloc.stop()
    grown = [s for s in after.compare_to(before, "lineno") if s.count_diff > 0 or s.size_diff > 0]
    assert not grown, f"array allocations during calls: {grown[:3]}"


@pytest.mark.parametrize("name", ZOO)
def test_calls_make_no_transient_buffers(zoo, name):
    """Arrays freed within the call are invisible to snapshots: bound the peak instead. Numpy's
    broadcasting path allocates iterator buffers (tens of KiB on a conv bias add); every
    operand is bound at its full shape so that never happens. What remains is numpy's own
    small per-call bookkeeping (a few hundred bytes), less than any array of ours. The peak
    counts every thread (the test runner's I/O thread once pushed one window past the bound):
    the smallest of three windows is taken — a buffer of ours would be in all three."""
    plan = nnos.compile(zoo[name], check=False)
    exe = plan.bind("numpy")
    for k, v in sample_inputs(plan).items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    windows = []
    for _ in range(3):
        tracemalloc.start()
        exe.run()
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(1000):
            exe.run()
        now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        windows.append((peak - start, now - start))
    assert min(w[0] for w in windows) < 2048, f"{windows}: bytes held at once during calls"
    assert min(w[1] for w in windows) < 2048


def test_tracemalloc_check_can_fail():
    # the check above must be able to see an allocating call
    numpy_domain = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)
    tracemalloc.start()
    before = tracemalloc.take_snapshot().filter_traces([numpy_domain])
    keep = [np.ones(16) + 1 for _ in range(10)]
    after = tracemalloc.take_snapshot().filter_traces([numpy_domain])
    tracemalloc.stop()
    assert keep
    assert any(s.count_diff > 0 for s in after.compare_to(before, "lineno"))


@pytest.mark.parametrize("name", ["mlp_s", "cnn_s", "gru_s"])
def test_repeated_calls_are_bitwise_identical(zoo, name):
    plan = nnos.compile(zoo[name], check=False)
    feeds = sample_inputs(plan, 5)
    first = {k: v.copy() for k, v in plan(feeds).items()}
    other = sample_inputs(plan, 6)
    for i in range(50):
        out = plan(other if i % 2 else feeds)
    out = plan(feeds)
    for k in first:
        assert np.array_equal(first[k], out[k])


def test_outputs_are_read_only_views(zoo):
    plan = nnos.compile(zoo["mlp_s"], check=False)
    out = plan(sample_inputs(plan))["action"]
    with pytest.raises(ValueError):
        out[0, 0] = 1


def test_wrong_calls_are_refused_and_do_not_break_the_plan(zoo):
    plan = nnos.compile(zoo["mlp_s"], check=False)
    good = sample_inputs(plan)
    ref = plan(good)["action"].copy()
    with pytest.raises(nnos.PlanCallError, match=r"input 'obs': expected float32\[1, 8\], got float64\[1, 8\]"):
        plan({"obs": good["obs"].astype(np.float64)})
    with pytest.raises(nnos.PlanCallError, match=r"expected float32\[1, 8\], got float32\[2, 8\]"):
        plan({"obs": np.zeros((2, 8), np.float32)})
    with pytest.raises(nnos.PlanCallError, match=r"expected inputs \['obs'\], got \['x'\]"):
        plan({"x": good["obs"]})
    with pytest.raises(nnos.PlanCallError, match="got list"):
        plan({"obs": [[0.0] * 8]})
    assert np.array_equal(plan(good)["action"], ref)


def test_nan_weights_compile_and_inspect_flags_them(tmp_path):
    from onnx import helper
    from tests.support.onnx_models import model, save, vi
    w = np.ones((4, 2), np.float32)
    w[1, 1] = np.nan
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 2])], [("w", w)])
    plan = nnos.compile(save(m, tmp_path / "nan.onnx"), check=False)
    assert any("NaN/Inf" in w for w in plan.meta["warnings"])
    assert np.isnan(plan({"x": np.ones((1, 4), np.float32)})["y"][0, 1])


def test_blas_is_single_threaded_inside_plans(zoo):
    from threadpoolctl import threadpool_info
    nnos.compile(zoo["mlp_s"], check=False).bind("numpy")
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas
    assert all(i["num_threads"] == 1 for i in blas)


def test_a_batch1_gemm_with_bias_is_one_blas_call_here_and_plain_in_the_plan(zoo):
    """The bias-row trick lives in this backend only: the plan keeps Gemm(x, W, b) (other
    backends see a plain Gemm), and the numpy binding runs it as one np.dot over a private
    input buffer ending in 1.0 — no separate bias add — with the same outputs."""
    import nnos
    plan = nnos.compile(zoo["mlp_s"], check=False)
    assert all(len(n.inputs) == 3 and not n.attrs for n in plan.graph.nodes if n.op == "Gemm")
    exe = plan.bind("numpy")
    funcs = [getattr(step, "func", None) for step in exe._steps]
    assert np.add not in funcs, "a bias add survived: the trick did not apply"
    x = np.random.default_rng(3).standard_normal(plan.inputs[0].shape).astype(np.float32)
    np.copyto(exe.inputs[plan.inputs[0].name], x)
    exe.run()
    from nnos.plan.sample import run_direct
    from nnos.passes import infer_types
    from nnos.frontend import import_onnx
    direct = run_direct(infer_types(import_onnx(zoo["mlp_s"])[0]), {plan.inputs[0].name: x})
    for name, want in direct.items():
        np.testing.assert_allclose(exe.outputs[name], want, rtol=1e-5, atol=1e-6)
