"""Quantizing stores (backends/cpu/qstore.py): a step whose float32 output only a later step's
QuantizeLinear reads stores that QuantizeLinear's bytes itself, in registers (the depthwise
row form), and the QuantizeLinear's step runs as nothing. Every output is bitwise what the
object without them computes, NaN, infinities and saturation included, on one thread and on a
team; where the float32 tensor has another reader, or its producer's kernel cannot quantize,
the QuantizeLinear runs as its own step; `nnos bench --steps` shows a pair as one step."""
from __future__ import annotations

import os
import platform

import numpy as np
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.backends import prepare
from nnos.backends.bench import step_times
from nnos.backends.cpu import codegen, source, width
from nnos.backends.cpu.qstore import choose as qstore_choose
from nnos.backends.cpu.toolchain import TARGETS, cpu_features, find_compiler
from nnos.backends.ops_cpu import CpuExecutable
from tests.support.executables import outputs
from tests.support.onnx_models import model, rand, save, vi
from tests.support.paths import ROOT
from tests.support.quantized import input_feed, quantized

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler here"),
              pytest.mark.usefixtures("cpu_cache")]
Q8 = {"uint8": (TensorProto.UINT8, np.uint8(128)), "int8": (TensorProto.INT8, np.int8(-3))}


def _unfused(plan, feeds: dict, monkeypatch) -> dict:
    """The outputs of an object built with no quantizing stores (each QuantizeLinear its own step)."""
    with monkeypatch.context() as m:
        m.setattr(codegen, "choose_quantized_stores", lambda prog, skip: {})
        assert "stored as step" not in source(plan)
        exe = CpuExecutable(plan)
        try:
            return outputs(exe, feeds)
        finally:
            exe.close()


def _same_as_unfused(plan, feeds: dict, monkeypatch) -> dict:
    """The plan's outputs on the cpu backend (verified against the reference by prepare) are
    bitwise the unfused object's, and a team of every CPU computes what one thread did."""
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    got = outputs(exe, feeds)
    exe.close()
    want = _unfused(plan, feeds, monkeypatch)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    team = prepare(plan, "cpu")
    team.use_cpus([-1])
    together = outputs(team, feeds)
    team.close()
    assert all(np.array_equal(together[k], got[k]) for k in got)
    return got


def _step_of(src: str, op: str) -> bool:
    return f": {op} " in "".join(line for line in src.splitlines() if line.startswith("/* step "))


def _hostile(shape, seed: int) -> np.ndarray:
    """Normal values wide enough to saturate either bound, and a NaN, both infinities and a
    huge value."""
    x = rand(*shape, seed=seed) * 4
    flat = x.reshape(-1)
    flat[[3, 50, 97, 180]] = [np.nan, np.inf, -np.inf, 1e30]
    return x


@pytest.mark.parametrize("vw", [4, 8, 16])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("c,h,wd,stride", [
    (6, 9, 40, 1),       # stride 1, rows of two vectors or more at every width: quantized in registers
    (5, 10, 33, 2),      # stride 2, 17 a row: in registers, a part-filled last vector
    (7, 6, 20, 1),       # stride 1, 20 a row: in registers at 4 and 8 lanes; at 16 the QuantizeLinear's step
])
def test_a_depthwise_conv_stores_its_quantizelinear_s_bytes(tmp_path, monkeypatch, vw, dtype, c, h, wd, stride):
    if vw > width():
        pytest.skip(f"this CPU has no {vw}-float vectors")
    monkeypatch.setenv("NNOS_CPU_VECTOR", str(vw))
    ow = (wd - 1) // stride + 1
    qtype, zp = Q8[dtype]
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["D"], kernel_shape=[3, 3], pads=[1] * 4,
                              strides=[stride, stride], group=c),
             helper.make_node("Clip", ["D", "zero", "six"], ["R"]),
             helper.make_node("QuantizeLinear", ["R", "s", "z"], ["Y"])]
    inits = [("W", rand(c, 1, 3, 3, seed=3) * 0.5), ("B", rand(c, seed=4)), ("zero", np.float32(0)),
             ("six", np.float32(6)), ("s", np.float32(6 / 251)), ("z", zp)]
    oh = (h - 1) // stride + 1
    m = model(nodes, [vi("X", [2, c, h, wd])], [vi("Y", [2, c, oh, ow], qtype)], inits, opset=13)
    plan = nnos.compile(save(m, tmp_path / "dwq.onnx"))
    src = source(plan)
    in_registers = stride == 2 or ow >= 2 * vw
    assert ("stored as step" in src) == ("vquant_store(yc + " in src) == (not _step_of(src, "QuantizeLinear")) \
        == in_registers
    feeds = {"X": _hostile((2, c, h, wd), seed=c)}
    got = _same_as_unfused(plan, feeds, monkeypatch)["Y"]
    want = plan(feeds)["Y"]
    assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1       # a tie rounded apart at most
    assert got.min() == np.iinfo(got.dtype).min or got.max() == np.iinfo(got.dtype).max


def test_a_producer_that_cannot_quantize_keeps_the_quantizelinear_step(tmp_path, monkeypatch):
    """DequantizeLinear (a scale and a non-zero zero point per channel) + Add → QuantizeLinear:
    the generic loops store float32 (see qstore.py), and the QuantizeLinear runs as its own
    step. (With no zero point, the channel-row form quantizes: test_cpu_quant.py.)"""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("DequantizeLinear", ["X", "xs", "xz"], ["F"], axis=1),
             helper.make_node("Add", ["F", "bias"], ["G"]),
             helper.make_node("QuantizeLinear", ["G", "s", "z"], ["Y"])]
    inits = [("xs", (rng.random(12) * 0.1 + 0.01).astype(np.float32)), ("xz", (np.arange(12) - 6).astype(np.int32)),
             ("bias", rand(12, 1, 1, seed=5)), ("s", np.float32(0.03)), ("z", np.uint8(100))]
    m = model(nodes, [vi("X", [1, 12, 5, 7], TensorProto.INT32)], [vi("Y", [1, 12, 5, 7], TensorProto.UINT8)],
              inits, opset=13)
    plan = nnos.compile(save(m, tmp_path / "dqq.onnx"))
    src = source(plan)
    assert "stored as step" not in src and _step_of(src, "QuantizeLinear")
    feeds = {"X": rng.integers(-300, 300, size=(1, 12, 5, 7)).astype(np.int32)}
    got = _same_as_unfused(plan, feeds, monkeypatch)["Y"]
    assert np.abs(got.astype(np.int32) - plan(feeds)["Y"].astype(np.int32)).max() <= 1


def _branch_between(tmp_path):
    """DequantizeLinear (per channel) + Add → G, then another branch's ReLU, then G's
    QuantizeLinear: in graph order, so the ReLU's step runs between the pair (as a ResNet
    block's skip branch does in onnxruntime's QDQ exports)."""
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("DequantizeLinear", ["X", "xs"], ["F"], axis=1),
             helper.make_node("Add", ["F", "bias"], ["G"]),
             helper.make_node("Relu", ["Z"], ["V"]),
             helper.make_node("QuantizeLinear", ["G", "s", "z"], ["Y"])]
    inits = [("xs", (rng.random(12) * 0.1 + 0.01).astype(np.float32)), ("bias", rand(12, 1, 1, seed=5)),
             ("s", np.float32(0.03)), ("z", np.uint8(100))]
    m = model(nodes, [vi("X", [1, 12, 5, 7], TensorProto.INT32), vi("Z", [1, 12, 5, 7])],
              [vi("Y", [1, 12, 5, 7], TensorProto.UINT8), vi("V", [1, 12, 5, 7])], inits, opset=13)
    plan = nnos.compile(save(m, tmp_path / "between.onnx"))
    steps = [n.op for n in plan.graph.nodes]
    assert steps.index("Relu") < steps.index("QuantizeLinear")
    feeds = {"X": rng.integers(-300, 300, size=(1, 12, 5, 7)).astype(np.int32), "Z": rand(1, 12, 5, 7, seed=9)}
    return plan, feeds


def test_a_quantizelinear_after_another_branch_is_stored_by_its_producer(tmp_path, monkeypatch):
    """Regression (act_s qdq_u8: four such QuantizeLinears ran as their own steps, 2.3 µs): the
    pair need not be adjacent; the outputs stay bitwise the unfused object's."""
    plan, feeds = _branch_between(tmp_path)
    src = source(plan)
    assert "stored as step" in src and not _step_of(src, "QuantizeLinear")
    got = _same_as_unfused(plan, feeds, monkeypatch)
    assert np.abs(got["Y"].astype(np.int32) - plan(feeds)["Y"].astype(np.int32)).max() <= 1


def test_a_quantizelinear_s_bytes_that_a_step_between_uses_keep_its_step(tmp_path):
    """Were the QuantizeLinear's bytes where a step between the pair reads or writes (the memory
    plan only promised them free from the QuantizeLinear's own step on), the producer must not
    store them early."""
    plan, _ = _branch_between(tmp_path)
    prog = codegen.Program(plan, width())
    q = next(n for n in plan.graph.nodes if n.op == "QuantizeLinear")
    assert qstore_choose(prog, set(prog.mem.skip))                # as planned: stored early
    for other in ("Z", "V"):                                      # the ReLU's input, its output
        prog.mem.tensors[q.outputs[0]] = prog.mem.tensors[other]
        assert qstore_choose(prog, set(prog.mem.skip)) == {}


@pytest.mark.parametrize("second_reader", ["graph output", "another op"])
def test_a_float_tensor_read_by_more_than_its_quantizelinear_is_stored(tmp_path, second_reader):
    nodes = [helper.make_node("Conv", ["X", "W"], ["D"], kernel_shape=[3, 3], pads=[1] * 4, group=4),
             helper.make_node("QuantizeLinear", ["D", "s", "z"], ["Y"])]
    outs = [vi("Y", [1, 4, 8, 40], TensorProto.UINT8)]
    if second_reader == "graph output":
        outs.append(vi("D", [1, 4, 8, 40]))
    else:
        nodes.append(helper.make_node("Relu", ["D"], ["E"]))
        outs.append(vi("E", [1, 4, 8, 40]))
    inits = [("W", rand(4, 1, 3, 3, seed=6)), ("s", np.float32(0.05)), ("z", np.uint8(128))]
    plan = nnos.compile(save(model(nodes, [vi("X", [1, 4, 8, 40])], outs, inits, opset=13), tmp_path / "two.onnx"))
    src = source(plan)
    assert "stored as step" not in src and _step_of(src, "QuantizeLinear")
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    exe.close()


@pytest.mark.parametrize("target", ["native", "x86-64-v3"])
def test_a_quantized_mobilenet_is_bitwise_the_unfused_object(tmp_path, monkeypatch, target):
    """onnxruntime's QDQ form of the zoo's depthwise policy: its depthwise convolutions store
    their QuantizeLinears' bytes; the outputs are bitwise unchanged (x86-64-v3: AVX2's own
    narrowing of the bytes, where the CPU can run it)."""
    if target != "native" and (TARGETS[target][0] != platform.machine() or TARGETS[target][2] - cpu_features()):
        pytest.skip(f"this CPU cannot run {target}")
    monkeypatch.setenv("NNOS_CPU_TARGET", target)
    path = quantized(os.path.join(ROOT, "models", "zoo", "mbv2_s.onnx"), str(tmp_path / "q.onnx"), "qdq_u8")
    plan = nnos.compile(path)
    src = source(plan)
    assert src.count("stored as step") >= 2 and "vquant_store(yc + " in src
    feeds = input_feed(path, seed=1)
    _same_as_unfused(plan, feeds, monkeypatch)
    rows = step_times(plan, 3, warmup=1)            # nnos bench --steps: the pair is one row
    fused = [r for r in rows if r["op"].endswith("+QuantizeLinear")]
    assert fused and all(plan.graph.nodes[r["step"] + 1].op in ("QuantizeLinear", "DequantizeLinear") for r in fused)
    assert not {r["step"] + 1 for r in fused} & {r["step"] for r in rows}
