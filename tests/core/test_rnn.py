"""GRU and LSTM with constant weights (the packed path) against onnxruntime, across the
attributes robot policies use: directions, clip, linear_before_reset, layouts, initial state."""
from __future__ import annotations

import itertools

import pytest
from onnx import helper

import nnos
from tests.support.onnx_models import assert_close
from tests.support.onnx_models import model, rand, save, vi

# layout=1 is covered by the ONNX node cases (*_batchwise): onnxruntime does not implement it
CASES = [c for c in itertools.product(["GRU", "LSTM"], ["forward", "reverse", "bidirectional"], [None, 0.8], [0, 1])
         if not (c[0] == "LSTM" and c[3])]   # linear_before_reset is a GRU attribute


@pytest.mark.parametrize("op,direction,clip,lbr", CASES)
def test_rnn_against_onnxruntime(tmp_path, ort_session, op, direction, clip, lbr):
    seq, batch, inp, hid = 3, 2, 5, 4
    g = 3 if op == "GRU" else 4
    nd = 2 if direction == "bidirectional" else 1
    attrs = {"hidden_size": hid, "direction": direction}
    if clip is not None:
        attrs["clip"] = clip
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    inits = [("W", rand(nd, g * hid, inp, seed=1)), ("R", rand(nd, g * hid, hid, seed=2)),
             ("B", rand(nd, 2 * g * hid, seed=3))]
    ins = ["x", "W", "R", "B", "", "h0"] + (["c0"] if op == "LSTM" else [])
    outs = ["y", "yh"] + (["yc"] if op == "LSTM" else [])
    io = [vi("x", [seq, batch, inp]), vi("h0", [nd, batch, hid])] + ([vi("c0", [nd, batch, hid])] if op == "LSTM" else [])
    out_vi = [vi("y", [seq, nd, batch, hid]), vi("yh", [nd, batch, hid])] + ([vi("yc", [nd, batch, hid])] if op == "LSTM" else [])
    path = save(model([helper.make_node(op, ins, outs, **attrs)], io, out_vi, inits), tmp_path / "rnn.onnx")
    plan = nnos.compile(path)
    feeds = {"x": rand(seq, batch, inp, seed=4), "h0": rand(nd, batch, hid, seed=5)}
    if op == "LSTM":
        feeds["c0"] = rand(nd, batch, hid, seed=6)
    ref = ort_session(path).run(None, feeds)
    got = plan(feeds)
    for spec, r in zip(plan.outputs, ref):
        assert_close(got[spec.name], r, rtol=1e-5)


def test_gru_hidden_state_only(zoo, ort_session):
    # gru_s asks for Y_h alone: the last step writes straight into it
    plan = nnos.compile(zoo["gru_s"])
    feeds = {"x": rand(1, 1, 16), "h": rand(1, 1, 64, seed=1)}
    assert_close(plan(feeds)["h_out"], ort_session(zoo["gru_s"]).run(None, feeds)[0])
