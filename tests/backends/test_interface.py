"""The interface every backend keeps (base.Executable), checked on each backend found here —
the null backend first, which runs nothing and so checks only the interface."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

import nnos
from nnos import backends
from nnos.backends.base import Executable
from nnos.errors import BackendError, PlanFormatError
from nnos.plan import Plan

BACKENDS = [n for n in backends.NAMES if n != "auto"]


def test_backends_are_found_by_module_name():
    here = os.path.dirname(backends.__file__)
    files = sorted(f[4:-3] for f in os.listdir(here) if f.startswith("ops_") and f.endswith(".py"))
    assert BACKENDS == files
    assert {"null", "numpy", "cpu", "cuda"} <= set(BACKENDS)
    assert set(backends.AUTO) <= set(BACKENDS)
    assert "null" not in backends.AUTO


def test_an_unknown_backend_is_named(zoo):
    plan = nnos.compile(zoo["mlp_s"], check=False)
    with pytest.raises(BackendError, match="unknown backend 'tpu'; expected one of auto, cpu, cuda, null, numpy, vulkan"):
        plan.bind("tpu")


@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_keeps_the_interface(name, zoo):
    plan = nnos.compile(zoo["cnn_s"], check=False)
    why = backends.module(name).available()
    if why is not None:
        with pytest.raises(BackendError, match=name):
            plan.bind(name)
        return
    if backends.module(name).covers(plan):            # a backend without every kernel yet: refused by name,
        with pytest.raises(BackendError, match=name):  # and the interface checked on a plan it covers
            plan.bind(name)
        plan = nnos.compile(zoo["mlp_s"], check=False)
    exe = plan.bind(name)
    assert isinstance(exe, Executable)
    assert exe.backend == name
    assert exe.choice == {"backend": name, "asked": name, "passed_over": {}}
    assert isinstance(exe.facts, dict)
    for spec, (k, v) in zip(plan.inputs, exe.inputs.items()):
        assert (k, v.shape, v.dtype) == (spec.name, spec.shape, spec.dtype)
        assert v.flags.writeable, f"{name}: input {k} must be writable"
    for spec, (k, v) in zip(plan.outputs, exe.outputs.items()):
        assert (k, v.shape, v.dtype) == (spec.name, spec.shape, spec.dtype)
        assert not v.flags.writeable, f"{name}: output {k} must be read-only"
    before = {k: v.ctypes.data for k, v in exe.outputs.items()}
    exe.run()
    assert before == {k: v.ctypes.data for k, v in exe.outputs.items()}, "outputs are the same buffers every run"


def test_the_null_backend_runs_nothing(zoo):
    exe = nnos.compile(zoo["mlp_s"], check=False).bind("null")
    for v in exe.inputs.values():
        v[...] = 1
    exe.run()
    assert all(not v.any() for v in exe.outputs.values())


def test_coverage_says_what_auto_would_measure(zoo):
    cov = backends.coverage(nnos.compile(zoo["mlp_s"], check=False))
    assert "numpy" in cov["candidates"] and set(cov["candidates"]) <= set(backends.AUTO)
    assert all(cov[n]["runs_here"] for n in cov["candidates"]) and cov["auto"].startswith("the fastest of ")
    for name in set(backends.AUTO) - set(cov["candidates"]):
        assert not cov[name]["runs_here"] and cov[name]["why_not"].startswith(f"{name} backend: "), cov[name]


def test_a_plan_of_the_old_format_is_refused_with_what_to_do(zoo, tmp_path):
    data = bytearray(nnos.compile(zoo["mlp_s"], check=False).to_bytes())
    struct.pack_into("<I", data, 8, 1)          # format version 1: bias-row Gemms, constant cells
    path = tmp_path / "old.nnos"
    path.write_bytes(bytes(data))
    with pytest.raises(PlanFormatError, match="plan format version 1, this nnos reads version 2: recompile"):
        nnos.load(str(path))
    with pytest.raises(PlanFormatError, match="recompile"):
        Plan.from_bytes(bytes(data))


def test_bias_is_added_by_the_backend_not_the_plan(zoo):
    """No plan carries nnos's old bias-row form: a batch-1 Gemm keeps its bias as an input."""
    plan = nnos.compile(zoo["mlp_s"], check=False)
    gemms = [n for n in plan.graph.nodes if n.op == "Gemm"]
    assert gemms
    assert all("bias_row" not in n.attrs and len(n.inputs) == 3 for n in gemms)
    feeds = {s.name: np.ones(s.shape, s.dtype) for s in plan.inputs}
    assert all(np.isfinite(v).all() for v in plan(feeds).values())
