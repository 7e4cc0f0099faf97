"""A table lookup whose only reader is a QuantizeLinear, stored as that QuantizeLinear's bytes
from a 256-byte table (backends/cpu/qlookup.py): a QDQ transformer's feed-forward — the sums'
DequantizeLinear, bias and rounding, a GELU on the grid (an nnos.Lookup), the QuantizeLinear
for the next product. Bitwise the reference; the QuantizeLinear's bytes over the product's own
sums (``QStore.late``) only for the pass after they are read."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu import codegen, source, width
from nnos.backends.cpu.qstore import choose
from nnos.backends.cpu.toolchain import cpu_features, find_compiler
from tests.support.onnx_models import model, save, vi
from tests.support.quantized import ints

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler here"),
              pytest.mark.usefixtures("cpu_cache")]
ROWS, K, N = 65, 32, 128


def _feed_forward(tmp_path, gelu: bool = True):
    """uint8 rows × a constant int8 weight → int32 sums → DequantizeLinear, bias, a rounding,
    then (``gelu``) a GELU rounded again, its float output read only by a QuantizeLinear."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMulInteger", ["x", "w", "xz"], ["acc"]),
             helper.make_node("DequantizeLinear", ["acc", "s"], ["f"]),
             helper.make_node("Add", ["f", "bias"], ["g"]),
             helper.make_node("QuantizeLinear", ["g", "gs", "gz"], ["gq"]),
             helper.make_node("DequantizeLinear", ["gq", "gs", "gz"], ["gd"])]
    last = "gd"
    if gelu:
        nodes += [helper.make_node("Gelu", ["gd"], ["h"]), helper.make_node("QuantizeLinear", ["h", "hs", "hz"], ["hq"]),
                  helper.make_node("DequantizeLinear", ["hq", "hs", "hz"], ["hd"])]
        last = "hd"
    nodes.append(helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["y"]))
    inits = [("w", ints(np.int8, (K, N), rng) // 2), ("xz", np.array(100, np.uint8)),
             ("s", np.array(2e-4, np.float32)), ("bias", rng.standard_normal(N).astype(np.float32) * 0.1),
             ("gs", np.array(0.0163, np.float32)), ("gz", np.array(142, np.uint8)),
             ("hs", np.array(0.0131, np.float32)), ("hz", np.array(30, np.uint8)),
             ("ys", np.array(0.0131, np.float32)), ("yz", np.array(30, np.uint8))]
    m = model(nodes, [vi("x", [1, ROWS, K], TensorProto.UINT8)], [vi("y", [1, ROWS, N], TensorProto.UINT8)], inits,
              opset=20)
    plan = nnos.compile(save(m, tmp_path / "ff.onnx"))
    return plan, {"x": ints(np.uint8, (1, ROWS, K), rng)}


def _bitwise(plan, feeds):
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    np.copyto(exe.inputs["x"], feeds["x"])
    exe.run()
    np.testing.assert_array_equal(exe.outputs["y"], plan(feeds)["y"])
    exe.close()


def _vbmi() -> bool:
    return width() == 16 and "avx512vbmi" in cpu_features()


def test_a_gelu_read_only_by_a_quantizelinear_stores_its_bytes(tmp_path, cpu_target):
    """The lookup's pass stores bytes (on AVX-512 VBMI from the registers, other 16-float
    targets lane by lane) and the QuantizeLinear runs as nothing; narrower vectors keep both."""
    plan, feeds = _feed_forward(tmp_path)
    assert "nnos.Lookup" in {n.op for n in plan.graph.nodes} | {e.op for n in plan.graph.nodes for e in n.epilogue}
    src = source(plan)
    assert ("Q[i] = TB[sgridindex(" in src) == (width() == 16)
    assert ("stored as step" in src) == (width() == 16)
    _bitwise(plan, feeds)
    if _vbmi():
        assert "vlookup_bytes(Q + i, vgridindexq(vload(O + i)" in src


def test_bytes_over_the_product_s_own_sums_wait_for_the_lookup_s_pass(tmp_path, cpu_target):
    """With the QuantizeLinear's bytes placed over the int32 sums (free once the chain's first
    pass has read them: a valid plan), the chain's lookup pass may store them — and does,
    bitwise — while a one-pass chain (no GELU) must not: its QuantizeLinear keeps its step."""
    for gelu in (True, False):
        plan, feeds = _feed_forward(tmp_path, gelu)
        q = next(n for n in plan.graph.nodes if n.op == "QuantizeLinear" and n.outputs[0] == "y")
        acc = next(n for n in plan.graph.nodes if n.op == "MatMulInteger").outputs[0]
        plan.memory.tensors[q.outputs[0]] = plan.memory.tensors[acc]
        prog = codegen.Program(plan, width())
        chosen = choose(prog, set(prog.mem.skip))
        assert all(c.late for c in chosen.values()) and chosen
        src = source(plan)
        assert ("stored as step" in src) == (gelu and width() == 16)
        _bitwise(plan, feeds)
