"""A prebuilt object's program (nnos/backends/cpu/record.py): the image's default model loads
its object without generating the C again — the code generator never imported, by the loop's
prebuild or by the binding — and computes
bitwise what the generated path computes; a record that does not fit is passed over, never
used."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nnos
from nnos.backends import prepare
from nnos.backends.cpu.toolchain import TARGETS, cpu_features, find_compiler
from nnos.plan import load
from tests.support.paths import ROOT

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")

CHILD = r"""
import json, sys
import numpy as np
from nnos.backends import prepare
from nnos.plan import load
from nnos.runtime.slots import prebuild
plan = load(sys.argv[1])
list(prebuild(plan, sys.argv[1], "auto"))      # the loop's, before it binds a model: nothing to build
exe = prepare(plan, "cpu")
x = np.random.default_rng(0).standard_normal(plan.inputs[0].shape).astype(np.float32)
exe.inputs[plan.inputs[0].name][...] = x
exe.run()
print(json.dumps({"program": exe.facts.get("program"), "key": exe.facts["key"],
                  "codegen": "nnos.backends.cpu.codegen" in sys.modules,
                  "out": {k: v.astype(np.float64).ravel().tolist() for k, v in exe.outputs.items()}}))
"""


def _target() -> str:
    fit = [n for n, (machine, _, needs, _) in TARGETS.items() if machine == os.uname().machine and needs <= cpu_features()]
    name = fit[-1] if fit else None
    if name is None:
        pytest.skip("no named target fits this CPU")
    return name


def _build(plan_path, pre, env) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "nnos.backends.cpu", "build", str(plan_path), "--record"],
                       capture_output=True, text=True, cwd=ROOT, env=dict(env, NNOS_CPU_CACHE=str(pre)))
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def _child(plan_path, env) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(plan_path)], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_images_object_loads_by_its_record_without_the_code_generator(tmp_path, zoo):
    """cnn_s: repacked convolution weights (the record's blob) beside the plan's own (by name)."""
    name = _target()
    path = tmp_path / "p.nnos"
    nnos.compile(zoo["cnn_s"]).save(str(path))
    pre = tmp_path / "prebuilt"
    env = dict(os.environ, NNOS_CPU_TARGET=name, NNOS_CPU_CACHE=str(tmp_path / "cache"))
    obj, rec = _build(path, pre, env)
    table = json.loads(open(rec).read())["consts"]
    assert any("weight" in e for e in table) and any("offset" in e for e in table), table
    os.chmod(pre, 0o555)
    recorded = _child(path, dict(env, NNOS_CPU_PREBUILT=str(pre)))
    assert recorded["program"] == "recorded with the object" and not recorded["codegen"], recorded
    generated = _child(path, dict(env, NNOS_CPU_PREBUILT=""))
    assert generated["program"] is None and generated["codegen"], generated
    assert recorded["key"] == generated["key"] and obj.endswith(f"plan-{recorded['key'][:32]}.so")
    assert recorded["out"] == generated["out"]                          # bitwise: the same object, the same table
    plan = load(str(path))
    ref = plan.bind("numpy")
    ref.inputs[plan.inputs[0].name][...] = np.random.default_rng(0).standard_normal(plan.inputs[0].shape)
    ref.run()
    for k, v in ref.outputs.items():
        np.testing.assert_allclose(np.asarray(recorded["out"][k]), v.ravel(), rtol=1e-4, atol=1e-5)


def test_a_record_that_does_not_fit_is_passed_over(tmp_path, monkeypatch, zoo):
    """A plan not read from a file, another vector width, a damaged blob, another plan's record:
    the C is generated as before (finding the same object), and the outputs are right."""
    name = _target()
    path = tmp_path / "p.nnos"
    nnos.compile(zoo["cnn_s"]).save(str(path))
    pre = tmp_path / "prebuilt"
    env = dict(os.environ, NNOS_CPU_TARGET=name)
    obj, rec = _build(path, pre, env)
    monkeypatch.setenv("NNOS_CPU_TARGET", name)
    monkeypatch.setenv("NNOS_CPU_PREBUILT", str(pre))
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path / "cache"))

    def used() -> bool:
        plan = load(str(path))
        exe = prepare(plan, "cpu")
        ref = prepare(plan, "numpy")
        for e in (exe, ref):
            e.inputs[plan.inputs[0].name][...] = 0.5
            e.run()
        for k in ref.outputs:
            np.testing.assert_allclose(exe.outputs[k], ref.outputs[k], rtol=1e-4, atol=1e-5)
        return exe.facts.get("program") is not None

    assert used()
    assert prepare(nnos.compile(zoo["cnn_s"]), "cpu").facts.get("program") is None     # compiled here: no digest
    monkeypatch.setenv("NNOS_CPU_VECTOR", "8" if TARGETS[name][3] == 4 else "4")
    assert not used()
    monkeypatch.delenv("NNOS_CPU_VECTOR")
    blob = rec[:-len(".json")] + ".bin"
    data = bytearray(open(blob, "rb").read())
    data[-1] ^= 1
    open(blob, "wb").write(bytes(data))
    assert not used()
    data[-1] ^= 1
    open(blob, "wb").write(bytes(data))
    assert used()
    text = json.loads(open(rec).read())
    text["plan"] = "0" * 64
    open(rec, "w").write(json.dumps(text))
    assert not used()


def test_no_record_for_a_native_object(tmp_path, zoo):
    """A native object's key holds this CPU's every feature: no record another machine could use."""
    path = tmp_path / "p.nnos"
    nnos.compile(zoo["mlp_s"]).save(str(path))
    env = {k: v for k, v in os.environ.items() if k != "NNOS_CPU_TARGET"}
    out = _build(path, tmp_path / "pre", env)
    assert "no record" in " ".join(out[1:]), out
    assert not [n for n in os.listdir(tmp_path / "pre") if n.startswith("program-")]
