"""The cuda backend. Everywhere: its generated CUDA C module — the same step bodies as the vulkan
shaders — compiles as C++ with every literal a float and computes each claimed ONNX node case
and the bundled models as the numpy reference does (run one thread at a time on the host,
tests/support/cuda_host.py). On an NVIDIA GPU (CuPy): through the backend interface, verified,
one CUDA graph, bitwise-repeatable, and a plan it does not cover refused by name. Without one
those skip, saying why; runs on a GPU are recorded in benchmarks/RESULTS.md."""
from __future__ import annotations

import os

import numpy as np
import pytest

import nnos
from nnos.backends import ops_cuda
from nnos.backends.cuda import source
from nnos.errors import BackendError
from tests.support.cuda_host import HostModule
from tests.support.gpu_cases import CLAIMED, MODELS
from tests.support.onnx_cases import case_runs, const_slots

WHY = ops_cuda.available()
gpu = pytest.mark.skipif(WHY is not None, reason=f"no CUDA GPU here: {WHY}")
FIRST_PER_OP = list({tuple(sorted({n.op_type for n in c.model.graph.node})): c for c in CLAIMED}.values())


def _close(got, want, rtol=1e-5):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("case", FIRST_PER_OP, ids=[c.name for c in FIRST_PER_OP])
def test_generated_cuda_c_computes_node_cases_on_the_host(case, tmp_path):
    ran = 0
    for plan, feeds, _, _ in case_runs(case, str(tmp_path / "model.onnx"), const_slots(case)):
        if ops_cuda.covers(plan):
            continue
        got = HostModule(plan, str(tmp_path))(feeds)
        for name, want in plan(feeds).items():
            _close(got[name], want)
        ran += 1
    if not ran:
        pytest.skip("no float32 data set in this case")


@pytest.mark.parametrize("model", MODELS[:4], ids=os.path.basename)
def test_generated_cuda_c_computes_the_bundled_models_on_the_host(model, tmp_path):
    plan = nnos.compile(model)
    host = HostModule(plan, str(tmp_path))
    steps = len(plan.graph.nodes) - len(plan.memory.skip)
    small = os.path.basename(model) in ("cartpole.onnx", "mlp_s.onnx")       # one block; the others a kernel a step
    assert host.source.count("__global__") == (1 if small else steps)
    assert host.source.count("__syncthreads()") == (steps + 1 if small else 0)      # + after its input copies
    assert ("host_out[" in host.source) == small                                      # its own output copies
    if "mlp_s" in model:                           # on a GPU its long rows are a warp's (checked there)
        assert "continue;" in host.device_source and "lane = tid % 32u" in host.device_source
    rng = np.random.default_rng(3)
    feeds = {n: rng.standard_normal(plan.graph.types[n].shape).astype(np.float32) for n in plan.graph.inputs}
    want = plan(feeds)
    for name, got in host(feeds).items():
        _close(got, want[name], 1e-4)


def test_every_literal_of_the_module_is_a_float():
    body = source.CUDA_C.function(0, 10, "    v = max(a, 0.5) * 1e-05 + 2.0 / 3.;\n    uint i = 7u;\n")
    assert "max(a, 0.5f) * 1e-05f + 2.0f / 3.f" in body and "7u" in body and "k0(float* arena" in body


def test_without_a_gpu_auto_passes_it_over_saying_why():
    if WHY is None:
        pytest.skip("a CUDA GPU is here")
    plan = nnos.compile(MODELS[0])
    assert "cuda backend:" in WHY
    assert plan.bind("auto").choice["passed_over"]["cuda"] == WHY
    with pytest.raises(BackendError, match="cuda backend"):
        plan.bind("cuda")


@gpu
@pytest.mark.parametrize("case", CLAIMED, ids=[c.name for c in CLAIMED])
def test_node_case_on_cuda(case, tmp_path):
    ran = 0
    for plan, feeds, _, _ in case_runs(case, str(tmp_path / "model.onnx"), const_slots(case)):
        if ops_cuda.covers(plan):
            continue
        exe = ops_cuda.prepare(plan)
        for k, v in feeds.items():
            exe.inputs[k][...] = v
        exe.run()
        for name, want in plan(feeds).items():
            _close(exe.outputs[name], want)
        ran += 1
    if not ran:
        pytest.skip("no float32 data set in this case")


@gpu
@pytest.mark.parametrize("model", MODELS, ids=os.path.basename)
def test_bundled_models_on_cuda_match_and_repeat_bitwise(model):
    plan = nnos.compile(model)
    exe = plan.bind("cuda")                             # verified against numpy through the interface
    assert exe.backend == "cuda" and exe.facts["steps"] == len(plan.graph.nodes) - len(plan.memory.skip)
    assert exe.facts["device"] and exe.facts["compute_capability"]
    ref = plan.bind("numpy")
    rng = np.random.default_rng(1)
    for _ in range(3):
        for k, v in exe.inputs.items():
            v[...] = ref.inputs[k][...] = rng.standard_normal(v.shape).astype(v.dtype)
        exe.run()
        ref.run()
        first = {k: v.copy() for k, v in exe.outputs.items()}
        for _ in range(3):
            exe.run()
            assert all(np.array_equal(v, first[k]) for k, v in exe.outputs.items()), "the same inputs, the same bits"
        for k in first:
            _close(first[k], ref.outputs[k], 1e-4)


@gpu
def test_a_plan_it_does_not_cover_is_refused_by_name(tmp_path):
    from onnx import helper
    from tests.support.onnx_models import model, rand, save, vi
    m = model([helper.make_node("Conv", ["x", "w"], ["y"])], [vi("x", [1, 2, 5])], [vi("y", [1, 3, 3])],
              [("w", rand(3, 2, 3))])
    plan = nnos.compile(save(m, str(tmp_path / "conv.onnx")))
    with pytest.raises(BackendError, match="cuda backend: no kernel for Conv over 1 spatial"):
        plan.bind("cuda")
