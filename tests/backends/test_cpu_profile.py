"""Each step's time on the cpu backend (cpu/profile.py, `nnos bench --steps`): the profiled
object runs every step the plan's object runs, in its order, on one thread — the serial form
and a team's form — and computes bitwise what the object the loop runs computes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu import source
from nnos.backends.cpu.profile import STEP
from nnos.backends.cpu.toolchain import find_compiler
from nnos.backends.ops_cpu import CpuExecutable
from nnos.errors import BackendError
from tests.support.onnx_models import model, rand, save, vi
from tests.support.paths import ROOT

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path_factory.getbasetemp() / "cpu-cache"))


def conv_plan(tmp_path, c: int, hw: int):
    """Conv → ReLU → depthwise → Add: ``c`` channels of ``hw``² (32 × 32² splits its steps over
    a team's threads; 4 × 6² does not)."""
    nodes = [helper.make_node("Conv", ["X", "W"], ["A"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["A"], ["R"]),
             helper.make_node("Conv", ["R", "D"], ["B"], kernel_shape=[3, 3], pads=[1] * 4, group=c),
             helper.make_node("Add", ["B", "X"], ["Y"])]
    m = model(nodes, [vi("X", [1, c, hw, hw])], [vi("Y", [1, c, hw, hw])],
              [("W", rand(c, c, 3, 3, seed=1) * 0.2), ("D", rand(c, 1, 3, 3, seed=2))])
    return nnos.compile(save(m, tmp_path / f"p{c}.onnx"))


@pytest.mark.parametrize("c,hw,team", [(4, 6, False), (32, 32, True)])
def test_the_profiled_object_runs_every_step_and_computes_the_same(tmp_path, c, hw, team):
    plan = conv_plan(tmp_path, c, hw)
    src = source(plan)
    assert ("void nnos_body(" in src) == team                       # the team's form, or the serial one
    x = np.random.default_rng(0).standard_normal((1, c, hw, hw)).astype(np.float32)
    plain, profiled = prepare(plan, "cpu"), CpuExecutable(plan, profile=True)
    for exe in (plain, profiled):
        np.copyto(exe.inputs["X"], x)
    plain.run()
    times = profiled.step_times(3)
    assert [s for s, _ in times] == [int(m.group(1)) for m in STEP.finditer(src)]   # every step, in order
    assert all(t >= 0 for _, t in times) and sum(t for _, t in times) > 0
    assert np.array_equal(profiled.outputs["Y"], plain.outputs["Y"])                 # bitwise
    with pytest.raises(BackendError, match="profile=True"):
        plain.step_times(1)


def test_a_plan_built_as_two_units_is_profiled_whole(tmp_path, monkeypatch):
    """A plan of MIN_STEPS steps or more compiles as two translation units (cpu/units.py):
    nnos_profile, after nnos_run, is in the last one and calls the first one's steps too."""
    from nnos.backends.cpu import toolchain, units
    built = []
    monkeypatch.setattr(toolchain, "cpus", lambda: 2)
    monkeypatch.setattr(toolchain, "units", lambda src, n: built.append(units.units(src, n)) or built[-1])
    layers = units.MIN_STEPS + 2
    nodes, inits, x = [], [], "X"
    for k in range(layers):
        nodes += [helper.make_node("Conv", [x, f"W{k}"], [f"C{k}"], kernel_shape=[3, 3], pads=[1] * 4),
                  helper.make_node("Relu", [f"C{k}"], [f"R{k}" if k < layers - 1 else "Y"])]
        inits.append((f"W{k}", rand(4, 4, 3, 3, seed=k) * 0.3))
        x = f"R{k}"
    plan = nnos.compile(save(model(nodes, [vi("X", [1, 4, 8, 8])], [vi("Y", [1, 4, 8, 8])], inits),
                             tmp_path / "deep.onnx"))
    src = source(plan)
    xs = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    plain, profiled = prepare(plan, "cpu"), CpuExecutable(plan, profile=True)
    for exe in (plain, profiled):
        np.copyto(exe.inputs["X"], xs)
    plain.run()
    times = profiled.step_times(3)
    assert [s for s, _ in times] == [int(m.group(1)) for m in STEP.finditer(src)] and len(times) >= layers
    assert np.array_equal(profiled.outputs["Y"], plain.outputs["Y"])
    profiled_units = [u for u in built if any("nnos_profile(" in text for text in u)]
    assert profiled_units and len(profiled_units[-1]) == 2                  # compiled as two units
    assert "nnos_profile(" in profiled_units[-1][-1]                        # the entry point in the last


def test_nnos_bench_steps_lists_each_step_slowest_first(tmp_path):
    plan = conv_plan(tmp_path, 8, 12)
    path = tmp_path / "p.nnos"
    plan.save(str(path))
    env = dict(os.environ, NNOS_CPU_CACHE=str(tmp_path / "c"))
    r = subprocess.run([sys.executable, "-m", "nnos.cli", "bench", str(path), "--steps", "--iters", "20", "--json"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted(row["step"] for row in rows) == sorted(int(m.group(1)) for m in STEP.finditer(source(plan)))
    assert [row["us"] for row in rows] == sorted((row["us"] for row in rows), reverse=True)
    assert abs(sum(row["share"] for row in rows) - 1) < 0.01
    ops = {row["op"] for row in rows}
    assert any(op.startswith("Conv") for op in ops), ops                # fused ops named with it: Conv+Relu
    r = subprocess.run([sys.executable, "-m", "nnos.cli", "bench", str(path), "--steps", "--iters", "20"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0 and "slowest first" in r.stdout and "µs" in r.stdout, r.stdout + r.stderr
