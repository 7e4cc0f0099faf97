"""The `nnos` command end to end, as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, assert_close


def nnos_cmd(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "nnos.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if check and r.returncode:
        pytest.fail(f"nnos {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def test_compile_inspect_run_bench(zoo, tmp_path, ort_session):
    plan = str(tmp_path / "cnn.nnos")
    out = nnos_cmd("compile", zoo["cnn_s"], "-o", plan).stdout
    assert "arena" in out and "lower bound" in out
    text = nnos_cmd("inspect", plan).stdout
    assert "Conv+Relu" in text and "naive sum" in text and "FLOPs" in text
    rep = json.loads(nnos_cmd("inspect", plan, "--json").stdout)
    mem = rep["memory"]
    assert mem["arena_bytes"] <= mem["naive_bytes"] and rep["meta"]["cost"]["flops"] > 6e6
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    nnos_cmd("run", plan, "--in", f"image={tmp_path / 'x.npy'}", "--out", str(tmp_path / "o"))
    assert_close(np.load(tmp_path / "o" / "logits.npy"), ort_session(zoo["cnn_s"]).run(None, {"image": x})[0])
    b = json.loads(nnos_cmd("bench", plan, "--iters", "200", "--json").stdout)
    assert 0 < b["p50_us"] <= b["p99_us"] <= b["max_us"]


def test_batch_option(zoo, tmp_path):
    plan = str(tmp_path / "m.nnos")
    nnos_cmd("compile", zoo["mlp_s"], "-o", plan, "--batch", "3")
    rep = json.loads(nnos_cmd("inspect", plan, "--json").stdout)
    assert rep["meta"]["inputs"][0]["shape"] == [3, 8]


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    r = nnos_cmd("compile", str(bad), "-o", str(tmp_path / "x.nnos"), check=False)
    assert r.returncode == 2 and r.stderr.startswith("nnos compile: error:") and "Traceback" not in r.stderr
    r = nnos_cmd("inspect", str(bad), check=False)
    assert r.returncode == 2 and "not an nnos plan" in r.stderr


def test_nan_weights_are_flagged_by_inspect(tmp_path):
    from onnx import helper
    from tests.helpers import model, save, vi
    w = np.full((3, 3), np.nan, np.float32)
    path = save(model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 3])], [vi("y", [1, 3])],
                      [("w", w)]), tmp_path / "nan.onnx")
    plan = str(tmp_path / "nan.nnos")
    r = nnos_cmd("compile", path, "-o", plan, "--no-check")
    assert "NaN/Inf" in r.stderr
    assert "WARNING" in nnos_cmd("inspect", plan).stdout
