"""ReduceMax and ReduceMin of float32 over trailing axes on the cpu backend (cpu/reduce.py):
four vectors of running extremes, then their lanes, then the tail — exactly the reference,
a NaN anywhere (in the vector body, in the tail) propagating, infinities kept; a reduction
that is not over trailing axes keeps the scalar loop. On every target the machine can run."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu import source
from nnos.backends.cpu.toolchain import find_compiler
from tests.support.onnx_models import model, save, vi

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler here"),
              pytest.mark.usefixtures("cpu_cache")]


def _plan(tmp_path, op: str, shape: list, axes: list, keepdims: int):
    out = [1 if d in axes else s for d, s in enumerate(shape)] if keepdims else \
        [s for d, s in enumerate(shape) if d not in axes]
    node = helper.make_node(op, ["x"], ["y"], axes=axes, keepdims=keepdims)
    return nnos.compile(save(model([node], [vi("x", shape)], [vi("y", out)], [], opset=13), tmp_path / "r.onnx"))


def _run(plan, x):
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    np.copyto(exe.inputs["x"], x)
    exe.run()
    got = exe.outputs["y"].copy()
    exe.close()
    return got


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("shape,axes,keepdims", [
    ([2, 16, 33, 3], [0, 1, 2, 3], 0),     # everything to one value (a dynamic quantization's range)
    ([3, 5, 7, 21], [2, 3], 1),            # each channel's plane: 147 values, a tail after the vectors
    ([4, 200], [1], 0),
])
def test_trailing_extremes_are_vectors_and_exactly_the_reference(tmp_path, cpu_target, op, shape, axes, keepdims):
    plan = _plan(tmp_path, op, shape, axes, keepdims)
    src = source(plan)
    assert "vf m0[4];" in src and f"m0[k] = {'vmaxnan' if op == 'ReduceMax' else 'vminnan'}(m0[k], v);" in src
    rng = np.random.default_rng(len(shape) + len(axes))
    x = (rng.standard_normal(shape) * 100).astype(np.float32)
    np.testing.assert_array_equal(_run(plan, x), plan({"x": x})["y"])
    blocks = x.reshape(-1, int(np.prod([shape[a] for a in axes])))
    blocks[0, 5] = np.nan                  # in the first vectors
    blocks[-1, -1] = np.nan                # in the last block's tail
    blocks[1 % len(blocks), 7] = np.inf
    blocks[1 % len(blocks), 9] = -np.inf
    got, want = _run(plan, x), plan({"x": x})["y"]
    np.testing.assert_array_equal(got, want)
    flat = got.reshape(-1)
    assert np.isnan(flat[0]) and np.isnan(flat[-1])


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("at", [3, 200, 207])
def test_an_extreme_past_the_four_vectors_is_found(tmp_path, cpu_target, op, at):
    """208 values: the four vectors' loop to 192, then whole vectors one at a time into the
    first (16 or 8 lanes), folded and halved — the extreme among the first four vectors, in a
    vector past them, or the last value; exactly the reference."""
    plan = _plan(tmp_path, op, [2, 208], [1], 0)
    x = np.random.default_rng(at).standard_normal((2, 208)).astype(np.float32)
    x[1, at] = 1000.0 if op == "ReduceMax" else -1000.0
    got = _run(plan, x)
    np.testing.assert_array_equal(got, plan({"x": x})["y"])
    assert got[1] == x[1, at]


def test_a_reduction_over_a_middle_axis_keeps_the_scalar_loop(tmp_path, cpu_target):
    plan = _plan(tmp_path, "ReduceMax", [3, 100, 5], [1], 0)      # 100 ≥ four vectors on any target
    assert "vf m[4];" not in source(plan)
    x = np.random.default_rng(2).standard_normal((3, 100, 5)).astype(np.float32)
    x[1, 3, 2] = np.nan
    np.testing.assert_array_equal(_run(plan, x), plan({"x": x})["y"])


@pytest.mark.parametrize("first", ["ReduceMin", "ReduceMax"])
@pytest.mark.parametrize("axes", [[0, 1, 2, 3], [2, 3]])
def test_a_range_is_one_pass(tmp_path, cpu_target, first, axes):
    """A dynamically quantized model's range of an activation: ReduceMin and ReduceMax of the
    same values, each with its chain (the second's reads the first's result: the scale), one
    the next step of the other — one step, one pass over the values (codegen runs the second's
    chain after the first's); exactly the reference, NaN and infinities included. Over other
    axes than the other's they stay two steps."""
    other = {"ReduceMin": "ReduceMax", "ReduceMax": "ReduceMin"}[first]
    shape = [2, 16, 9, 9]                  # 81 values a block: four vectors and a tail (16-float vectors)
    kept = [1 if d in axes else s for d, s in enumerate(shape)]
    nodes = [helper.make_node(first, ["x"], ["a"], axes=axes, keepdims=1),
             helper.make_node("Min", ["a", "zero"], ["lo"]),
             helper.make_node(other, ["x"], ["b"], axes=axes, keepdims=1),
             helper.make_node("Max", ["b", "zero"], ["hi"]),
             helper.make_node("Sub", ["hi", "lo"], ["span"]),
             helper.make_node("Div", ["span", "q"], ["scale"]),
             helper.make_node(first, ["x"], ["c"], axes=[3], keepdims=1),         # not the same axes: its own step
             helper.make_node(other, ["x"], ["d"], axes=[2, 3], keepdims=1)]
    outs = [vi("lo", kept), vi("scale", kept), vi("c", shape[:3] + [1]), vi("d", shape[:2] + [1, 1])]
    plan = nnos.compile(save(model(nodes, [vi("x", shape)], outs,
                                   [("zero", np.zeros((), np.float32)), ("q", np.array(255, np.float32))], opset=13),
                             tmp_path / "range.onnx"))
    src = source(plan)
    assert src.count(f"'s {other} */") == 1 and src.count("vf m1[4];") == 1
    assert src.count("/* step ") == 3                      # the pair, and the two over other axes
    rng = np.random.default_rng(len(axes))
    x = (rng.standard_normal(shape) * 50).astype(np.float32)
    for case in range(2):
        if case:
            x[0, 0, 0, 1], x[-1, -1, -1, -1], x[1, 3, 2, 2] = np.nan, np.inf, -np.inf
        exe = prepare(plan, "cpu")
        assert exe.backend == "cpu"
        np.copyto(exe.inputs["x"], x)
        exe.run()
        for k, v in plan({"x": x}).items():
            np.testing.assert_array_equal(exe.outputs[k], v, err_msg=k)
        exe.close()


@pytest.mark.parametrize("case", ["values", "extremes in a row's tail", "nan"])
def test_a_dequantizing_pass_takes_the_range_after_it(tmp_path, cpu_target, case):
    """A dynamically quantized model's range of an activation (ReduceMin and ReduceMax of all
    of it, the very next steps) taken by the pass that dequantizes the int32 sums — one pass,
    not two — its extremes exactly the reference's: in the vectors, in a row's scalar tail, and
    NaN when a value is NaN (a NaN scale)."""
    shape = [1, 8, 5, 7]                       # a channel's 35 values: whole vectors and a tail on every target
    nodes = [helper.make_node("Cast", ["acc"], ["c"], to=1), helper.make_node("Mul", ["c", "s"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["f"]),
             helper.make_node("ReduceMin", ["f"], ["lo"], keepdims=0), helper.make_node("ReduceMax", ["f"], ["hi"], keepdims=0),
             helper.make_node("Relu", ["f"], ["y"])]
    m = model(nodes, [vi("acc", shape, TensorProto.INT32), vi("s", [1])], [vi("lo", []), vi("hi", []), vi("y", shape)],
              [("b", np.linspace(-1, 1, 8, dtype=np.float32).reshape(8, 1, 1))], opset=13)
    plan = nnos.compile(save(m, tmp_path / "range.onnx"))
    src = source(plan)
    assert "with step" in src and "r0 = vminnan(r0, v);" in src and "r1 = vmaxnan(r1, v);" in src
    acc = np.random.default_rng(9).integers(-5000, 5000, shape).astype(np.int32)
    if case == "extremes in a row's tail":
        acc[0, 5, 4, 6], acc[0, 2, 4, 5] = -90000, 90000        # a channel's 35th and 34th values
    s = np.array([np.nan if case == "nan" else 0.01], np.float32)
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    np.copyto(exe.inputs["acc"], acc)
    np.copyto(exe.inputs["s"], s)
    exe.run()
    want = plan({"acc": acc, "s": s})
    for k in ("lo", "hi", "y"):
        np.testing.assert_array_equal(exe.outputs[k], want[k], err_msg=k)
    if case == "extremes in a row's tail":
        assert want["lo"] < -899 and want["hi"] > 899          # the tail's values are the extremes
    exe.close()


def test_a_range_after_another_branch_s_step_is_taken_by_the_dequantizing_pass(tmp_path, cpu_target):
    """The range's ReduceMin two steps after the dequantizing Cast, an unrelated branch's step
    between (act_s's state): the Cast's pass still takes the range — its bytes are not that
    step's — and both extremes and the other branch exactly the reference's."""
    shape = [1, 8, 5, 7]
    nodes = [helper.make_node("Cast", ["acc"], ["c"], to=1), helper.make_node("Mul", ["c", "s"], ["f"]),
             helper.make_node("Sigmoid", ["other"], ["o"]),
             helper.make_node("ReduceMin", ["f"], ["lo"], keepdims=0), helper.make_node("ReduceMax", ["f"], ["hi"], keepdims=0),
             helper.make_node("Relu", ["f"], ["y"])]
    m = model(nodes, [vi("acc", shape, TensorProto.INT32), vi("s", [1]), vi("other", [3, 40])],
              [vi("lo", []), vi("hi", []), vi("y", shape), vi("o", [3, 40])], opset=13)
    plan = nnos.compile(save(m, tmp_path / "range_apart.onnx"))
    ops = [n.op for n in plan.graph.nodes]
    assert ops.index("Sigmoid") < ops.index("ReduceMin")              # the other branch's step between
    src = source(plan)
    cast = ops.index("Cast")
    assert f"/* step {cast}: Cast" in src and f"with step {ops.index('ReduceMin')}'s ReduceMin" in src
    rng = np.random.default_rng(10)
    feeds = {"acc": rng.integers(-5000, 5000, shape).astype(np.int32), "s": np.array([0.01], np.float32),
             "other": rng.standard_normal((3, 40)).astype(np.float32)}
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    want = plan(feeds)
    for k in ("lo", "hi", "y"):
        np.testing.assert_array_equal(exe.outputs[k], want[k], err_msg=k)
    np.testing.assert_allclose(exe.outputs["o"], want["o"], rtol=0, atol=1e-6)      # the prelude's vector sigmoid
    exe.close()
