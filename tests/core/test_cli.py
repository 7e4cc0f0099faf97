"""The `nnos` command end to end, as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.support.onnx_models import assert_close
from tests.support.paths import ROOT


def nnos_cmd(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "nnos.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if check and r.returncode:
        pytest.fail(f"nnos {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def test_compile_inspect_run_bench(zoo, tmp_path, ort_session):
    plan = str(tmp_path / "cnn.nnos")
    out = nnos_cmd("compile", zoo["cnn_s"], "-o", plan).stdout
    assert "arena" in out
    assert "lower bound" in out
    text = nnos_cmd("inspect", plan).stdout
    assert "Conv+Relu" in text
    assert "naive sum" in text
    assert "FLOPs" in text
    rep = json.loads(nnos_cmd("inspect", plan, "--json").stdout)
    mem = rep["memory"]
    assert mem["arena_bytes"] <= mem["naive_bytes"]
    assert rep["meta"]["cost"]["flops"] > 6e6
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
    assert r.returncode == 2
    assert r.stderr.startswith("nnos compile: error:")
    assert "Traceback" not in r.stderr
    r = nnos_cmd("inspect", str(bad), check=False)
    assert r.returncode == 2
    assert "not an nnos plan" in r.stderr


def test_nan_weights_are_flagged_by_inspect(tmp_path):
    from onnx import helper
    from tests.support.onnx_models import model, save, vi
    w = np.full((3, 3), np.nan, np.float32)
    path = save(model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 3])], [vi("y", [1, 3])],
                      [("w", w)]), tmp_path / "nan.onnx")
    plan = str(tmp_path / "nan.nnos")
    r = nnos_cmd("compile", path, "-o", plan, "--no-check")
    assert "NaN/Inf" in r.stderr
    assert "WARNING" in nnos_cmd("inspect", plan).stdout


def _nnos(*args):
    return subprocess.run([sys.executable, "-m", "nnos.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_huge_models_are_refused_naming_the_node_not_a_traceback(tmp_path):
    # regression (hardening): an input of [2^20, 2^20] and an Expand to 2^40 elements crashed
    # `nnos compile` with _ArrayMemoryError
    from onnx import TensorProto, helper, numpy_helper
    import onnx
    big_in = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 20, 1 << 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20, 1 << 20])]),
        opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(big_in, str(tmp_path / "big_in.onnx"))
    r = _nnos("compile", str(tmp_path / "big_in.onnx"), "-o", str(tmp_path / "a.nnos"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "input 'x'" in r.stderr, r.stderr
    assert "NNOS_MAX_TENSOR_ELEMENTS" in r.stderr, r.stderr
    expand = helper.make_model(helper.make_graph(
        [helper.make_node("Expand", ["one", "shape"], ["e"], name="blow_up"),
         helper.make_node("Add", ["x", "e"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20, 1 << 20])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one"),
         numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "shape")]),
        opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(expand, str(tmp_path / "expand.onnx"))
    r = _nnos("compile", str(tmp_path / "expand.onnx"), "-o", str(tmp_path / "b.nnos"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "blow_up" in r.stderr, r.stderr
    assert "elements" in r.stderr, r.stderr


def test_compile_says_which_dims_it_fixed(tmp_path):
    # regression (hardening): a [1, T, 8] input silently compiled with T = 1
    from onnx import TensorProto, helper
    import onnx
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", 8])]),
        opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(tmp_path / "t.onnx"))
    r = _nnos("compile", str(tmp_path / "t.onnx"), "-o", str(tmp_path / "t.nnos"))
    assert r.returncode == 0, r.stderr
    assert "fixed: input 'x' dimension 1 ('T') = 1" in r.stderr, r.stderr
    assert "--dim T=N" in r.stderr, r.stderr
    r = _nnos("compile", str(tmp_path / "t.onnx"), "-o", str(tmp_path / "t.nnos"), "--dim", "T=16")
    assert "dimension 1 ('T') = 16 (--dim)" in r.stderr, r.stderr


BOARD = f"{ROOT}/hardware/boards/cartpole-sim.toml"


def test_board_check_validates_without_starting_anything(tmp_path):
    r = _nnos("board", "check", BOARD)
    assert r.returncode == 0, r.stderr
    assert "is valid" in r.stdout, r.stderr
    assert "binds cartpole.onnx" in r.stdout, r.stderr
    bad = tmp_path / "b.toml"
    bad.write_text(open(BOARD).read().replace("rate_hz = 50", "rate = 30"))
    r = _nnos("board", "check", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    line = next(i + 1 for i, x in enumerate(bad.read_text().splitlines()) if x.startswith("rate = 30"))
    assert f"{bad}:{line}: unknown key 'rate' in [board]; did you mean 'rate_hz'?" in r.stderr, r.stderr
    other = tmp_path / "m.onnx"
    from onnx import TensorProto, helper
    import onnx
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["obs"], ["action"])], "g",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 3])]),
        opset_imports=[helper.make_opsetid("", 17)]), str(other))
    r = _nnos("board", "check", BOARD, "--model", str(other))
    assert r.returncode == 2, r.stderr
    assert "tensor 'obs' is float32[1, 3]" in r.stderr, r.stderr


def test_up_with_a_bad_board_is_one_line_not_a_traceback(tmp_path):
    # regression (hardening): `nnos up` printed a traceback around any board ConfigError
    bad = tmp_path / "b.toml"
    bad.write_text(open(BOARD).read().replace('driver = "nnos-serial"', 'driver = "nnos-serial"\nbaud_rate = 1000000'))
    r = _nnos("up", "--board", str(bad), "--data", str(tmp_path / "d"), "--no-status", "--duration", "1")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert "unknown key 'baud_rate' in [devices]" in r.stderr
    assert str(bad) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_closed_pipe_exits_quietly(monkeypatch):
    # regression (hardening): `nnos ctl ... | head` ended in a BrokenPipeError traceback
    import os
    from nnos.cli import main
    r, w = os.pipe()
    os.close(r)                                         # the reader (head) is gone
    out = os.fdopen(w, "w", buffering=1)                # line-buffered: each line is written at once
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["flags"]) == 0


def test_ctl_prints_text_as_text(capsys):
    # regression (hardening): ctl printed \\u00b5 instead of µ
    from nnos.ctl import _show

    class R:
        status_code = 200

        def json(self):
            return {"why": "p99.9 12 µs ≤ budget 10000 µs"}
    _show(R())
    out = capsys.readouterr().out
    assert "12 µs" in out
    assert "\\\\u00b5" not in out


def test_a_plan_of_an_older_format_is_refused_with_what_to_do(zoo, tmp_path):
    """The plan format changed (2: no bias-row Gemms): a plan file written by an older nnos is
    refused in one line that says to recompile, and `--backend null` binds without computing."""
    import hashlib
    import struct
    plan = str(tmp_path / "new.nnos")
    out = nnos_cmd("compile", zoo["mlp_s"], "-o", plan, "--backend", "null").stdout
    assert "backend null" in out
    data = bytearray(open(plan, "rb").read()[:-32])
    struct.pack_into("<I", data, 8, 1)
    data += hashlib.sha256(data).digest()
    old = tmp_path / "old.nnos"
    old.write_bytes(bytes(data))
    r = nnos_cmd("inspect", str(old), check=False)
    assert r.returncode == 2, r.stderr
    assert "plan format version 1, this nnos reads version 2: recompile the plan from its ONNX model" in r.stderr
    assert "Traceback" not in r.stderr
