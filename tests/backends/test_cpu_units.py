"""A large plan's source compiled as two translation units side by side (cpu/units.py): the
object is the same plan — outputs bitwise those of the one-file build, on one thread and on
a team — and a small plan stays one file."""
from __future__ import annotations

import os

import numpy as np
import pytest

import nnos
from nnos.backends import prepare
from nnos.backends.cpu import source, toolchain
from nnos.backends.cpu.units import MIN_STEPS, units
from tests.support.paths import ROOT

pytestmark = pytest.mark.skipif(toolchain.find_compiler() is None, reason="no C compiler")


def _run(plan, feeds, team: bool) -> dict:
    exe = prepare(plan, "cpu")
    if team:
        exe.use_cpus([-1])
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    out = {k: np.array(v) for k, v in exe.outputs.items()}
    exe.close()
    return out


@pytest.mark.parametrize("team", [False, True])
def test_two_units_build_the_same_plan(tmp_path, monkeypatch, team):
    plan = nnos.compile(os.path.join(ROOT, "models", "zoo", "act_s.onnx"))
    parts = units(source(plan), 2)
    assert len(parts) == 2
    assert parts[0].count("int nnos_team_start(") == 0 and parts[1].count("int nnos_team_start(") == 1
    assert "void nnos_run(" in parts[1] and "nnos_key" not in parts[0]
    feeds = {t.name: np.random.default_rng(1).standard_normal(t.shape).astype(t.dtype) for t in plan.inputs}
    got = {}
    for n in (1, 2):
        monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path / f"cache{n}"))
        monkeypatch.setattr(toolchain, "cpus", lambda n=n: n)
        got[n] = _run(plan, feeds, team)
    for k in got[1]:
        np.testing.assert_array_equal(got[2][k], got[1][k], err_msg=k)


def test_a_small_plan_stays_one_unit(zoo):
    src = source(nnos.compile(zoo["mlp_s"]))
    assert src.count("void nnos_step_") < MIN_STEPS and units(src, 2) == [src]
