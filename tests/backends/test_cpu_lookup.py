"""nnos.Lookup on the cpu backend (the prelude's vlookup and slookup): a table read at each
value's grid index, a vector of them at 4, 8 and 16 lanes (AVX-512's permutes, AVX2's gathers,
lane by lane elsewhere; with the rounding to that grid before it, the index is that rounding's
own), after a generic loop as a second vector pass, and in the generic loop where
the rest of its chain is not a vector one — each bitwise the reference. The zoo's QDQ act_s has
its three GELUs as tables, bitwise the plan without them."""
from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import helper

import nnos
import nnos.passes
from nnos.backends import prepare
from nnos.backends.cpu import source, width
from nnos.backends.cpu.toolchain import find_compiler
from nnos.ops.lookup import LOOKUP
from tests.support.executables import outputs
from tests.support.onnx_models import model, save, vi
from tests.support.paths import ROOT
from tests.support.quantized import input_feed, qdq_gelu, quantized, rounded

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler here"),
              pytest.mark.usefixtures("cpu_cache")]
SHAPE = (3, 7, 11)              # 231 values: a part-filled last vector at every width


def _feeds(shape) -> dict:
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32) * 4
    x.flat[:5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    return {"x": x}


def _bitwise_the_reference(plan, feeds: dict) -> None:
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    try:
        got, want = outputs(exe, feeds), plan(feeds)
        for k, v in got.items():
            np.testing.assert_array_equal(v, want[k], err_msg=k)
    finally:
        exe.close()


@pytest.mark.parametrize("vw", [4, 8, 16])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_a_tabulated_gelu_reads_its_table_a_vector_at_a_time(tmp_path, monkeypatch, vw, dtype):
    if vw > width():
        pytest.skip(f"this CPU has no {vw}-float vectors")
    monkeypatch.setenv("NNOS_CPU_VECTOR", str(vw))
    plan = nnos.compile(qdq_gelu(tmp_path / "gelu.onnx", dtype, SHAPE))
    src = source(plan)
    # the input's rounding to the table's grid and the lookup as one (one division for both)
    assert "vlookupq(" in src, "the lookup is not in a vector loop with the rounding before it"
    _bitwise_the_reference(plan, _feeds(SHAPE))


def test_a_lookup_whose_chain_goes_on_per_channel_is_in_the_generic_loop(tmp_path):
    """Erf of the rounded x, then a per-channel bias: the chain after the table is no vector one,
    so the DequantizeLinear's loop reads the table an element at a time."""
    nodes, inits = [], [("b", np.linspace(-1, 1, SHAPE[-1]).astype(np.float32))]
    x = rounded(nodes, inits, "x", 0, "uint8", 0.03)
    nodes += [helper.make_node("Erf", [x], ["e"]), helper.make_node("Add", ["e", "b"], ["y"])]
    plan = nnos.compile(save(model(nodes, [vi("x", list(SHAPE))], [vi("y", list(SHAPE))], inits),
                             tmp_path / "erf_bias.onnx"))
    src = source(plan)
    assert "slookup(" in src and "vlookup(v, " not in src
    _bitwise_the_reference(plan, _feeds(SHAPE))


def test_the_zoo_s_quantized_act_has_its_gelus_as_tables(tmp_path, monkeypatch):
    path = quantized(os.path.join(ROOT, "models", "zoo", "act_s.onnx"), str(tmp_path / "q.onnx"), "qdq_u8")
    plan = nnos.compile(path)
    ops = [op for n in plan.graph.nodes for op in [n.op] + [e.op for e in n.epilogue]]
    assert ops.count(LOOKUP) == 3 and "Erf" not in ops, ops            # two encoder layers, one decoder layer
    with monkeypatch.context() as m:
        m.setattr(nnos.passes, "tabulate", lambda g: g)
        before = nnos.compile(path)
    feeds = input_feed(path, seed=3)
    got, want = plan(feeds), before(feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    _bitwise_the_reference(plan, feeds)
