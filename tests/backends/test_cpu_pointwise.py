"""1×1 convolutions between NCHW tensors with the pixels in the lanes (backends/cpu/pointwise.py):
at 4, 8 and 16 lanes, output channels that do not fill the last register block, with and
without a bias, ReLU6 in registers or a residual Add after, two images — each within float32's
tolerance of the reference, and a team of every CPU bitwise one thread. Between a 1×1 and a
depthwise convolution the tensor stays NCHW (conv.stays_nchw), so the zoo's MobileNet runs its
expansions and projections in this form."""
from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu import source, width
from nnos.backends.cpu.toolchain import find_compiler
from tests.support.executables import outputs
from tests.support.onnx_models import assert_close, model, rand, save, vi
from tests.support.paths import ROOT

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler here"),
              pytest.mark.usefixtures("cpu_cache")]
MARK = "const float *wb = Wp + ob * "          # the pointwise form's weight block, in the source


def _check(plan, feeds: dict) -> None:
    """Within float32's tolerance of the reference; a team computes bitwise what one thread does."""
    one = prepare(plan, "cpu")
    assert one.backend == "cpu"
    got = outputs(one, feeds)
    one.close()
    want = plan(feeds)
    for k in want:
        assert_close(got[k], want[k])
    team = prepare(plan, "cpu")
    team.use_cpus([-1])
    together = outputs(team, feeds)
    team.close()
    for k in got:
        np.testing.assert_array_equal(together[k], got[k], err_msg=k)


@pytest.mark.parametrize("vw", [4, 8, 16])
@pytest.mark.parametrize("c,oc,hw,after", [
    (16, 64, 8, "relu6"),        # a MobileNet's expansion (at 6 channels a block: 10 and 4 left)
    (64, 16, 8, "add"),          # its projection with the residual added after
    (24, 10, 4, "none"),         # fewer output channels than two blocks, no bias
    (8, 36, 16, "relu6"),        # whole blocks at 4 and 6 channels a block
])
def test_a_1x1_convolution_between_nchw_tensors_runs_along_pixel_rows(tmp_path, monkeypatch, vw, c, oc, hw, after):
    if vw > width():
        pytest.skip(f"this CPU has no {vw}-float vectors")
    if hw * hw % vw:
        pytest.skip(f"{hw}×{hw} pixels are not whole {vw}-float vectors")
    monkeypatch.setenv("NNOS_CPU_VECTOR", str(vw))
    inits = [("w", rand(oc, c, 1, 1, seed=1))]
    conv_in = ["x", "w"] if after == "none" else ["x", "w", "b"]
    if after != "none":
        inits.append(("b", rand(oc, seed=2)))
    nodes = [helper.make_node("Conv", conv_in, ["y0" if after != "none" else "y"], kernel_shape=[1, 1])]
    inputs = [vi("x", [2, c, hw, hw])]
    if after == "relu6":
        inits += [("lo", np.array(0, np.float32)), ("hi", np.array(6, np.float32))]
        nodes.append(helper.make_node("Clip", ["y0", "lo", "hi"], ["y"]))
    elif after == "add":
        inputs.append(vi("r", [2, oc, hw, hw]))
        nodes.append(helper.make_node("Add", ["y0", "r"], ["y"]))
    plan = nnos.compile(save(model(nodes, inputs, [vi("y", [2, oc, hw, hw])], inits), tmp_path / "pw.onnx"))
    assert source(plan).count(MARK) == 1
    feeds = {"x": rand(2, c, hw, hw, seed=3) * 3}
    if after == "add":
        feeds["r"] = rand(2, oc, hw, hw, seed=4)
    _check(plan, feeds)


def test_a_1x1_convolution_whose_image_is_not_whole_vectors_keeps_the_channel_form(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1])]
    plan = nnos.compile(save(model(nodes, [vi("x", [1, 8, 3, 5])], [vi("y", [1, 16, 3, 5])],
                                   [("w", rand(16, 8, 1, 1))]), tmp_path / "odd.onnx"))
    assert MARK not in source(plan)
    _check(plan, {"x": rand(1, 8, 3, 5, seed=5)})


def test_the_zoo_s_mobilenet_keeps_its_expansions_and_projections_nchw(tmp_path):
    """Every 1×1 convolution of mbv2_s next to a depthwise one reads and writes NCHW rows."""
    plan = nnos.compile(os.path.join(ROOT, "models", "zoo", "mbv2_s.onnx"))
    ones = [n for n in plan.graph.nodes if n.op == "Conv" and list(n.attrs.get("kernel_shape", [])) == [1, 1]]
    assert len(ones) >= 8
    assert source(plan).count(MARK) >= len(ones) - 1          # the first expansion reads the stem's blocked output
    x = rand(*plan.graph.type_of(plan.graph.inputs[0]).shape, seed=6)
    _check(plan, {plan.graph.inputs[0]: x} | {i: rand(*plan.graph.type_of(i).shape, seed=7)
                                                 for i in plan.graph.inputs[1:]})
