"""Functions of one 8-bit grid's values as tables (passes/lookup.py, ops/lookup.py): a QDQ
model's GELU between roundings becomes one nnos.Lookup whose outputs are bitwise the chain's on
the reference, NaN, infinities and saturation included; what is not a function of one grid's
values (a per-channel operand, a per-channel grid, a value read outside the chain) or costs less
than a lookup stays as it was."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import nnos
import nnos.passes
from nnos.errors import CompileError
from nnos.ir import Node
from nnos.ops import evaluate
from nnos.ops.lookup import LOOKUP
from tests.support.onnx_models import model, save, vi
from tests.support.quantized import qdq_gelu, rounded

SHAPE = [2, 5, 40]
def _feeds() -> dict:
    x = np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32) * 4
    x[0, 0, :5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]          # NaN to the low bound, saturation
    x[1].flat[:256] = (np.arange(256) - 128) * np.float32(0.04)   # every value of the grid
    return {"x": x}


def _untabulated(path: str, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(nnos.passes, "tabulate", lambda g: g)
        return nnos.compile(path)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_a_qdq_gelu_is_one_lookup_bitwise_the_chain(tmp_path, monkeypatch, dtype):
    path = qdq_gelu(tmp_path / "gelu.onnx", dtype, SHAPE)
    plan, before = nnos.compile(path), _untabulated(path, monkeypatch)
    ops = [op for n in plan.graph.nodes for op in [n.op] + [e.op for e in n.epilogue]]
    assert ops.count(LOOKUP) == 1 and "Erf" not in ops and "Div" not in ops, ops
    assert "Erf" in [op for n in before.graph.nodes for op in [n.op] + [e.op for e in n.epilogue]]
    tables = [v for k, v in plan.graph.consts.items() if "lookup_table" in k]
    assert [(t.shape, t.dtype) for t in tables] == [((256,), np.float32)]
    feeds = _feeds()
    np.testing.assert_array_equal(plan(feeds)["y"], before(feeds)["y"])       # the reference, both ways


def test_a_chain_s_part_that_is_a_function_of_the_grid_is_tabulated_and_the_rest_stays(tmp_path, monkeypatch):
    """Erf of the rounded x, then a per-channel Mul (not one value) and a Tanh of Erf's output
    that is also a graph output: Erf alone becomes the table; Mul and Tanh stay, reading it."""
    nodes, inits = [], [("w", np.linspace(-2, 2, 40).astype(np.float32))]
    x = rounded(nodes, inits, "x", 0, "uint8", 0.04)
    nodes += [helper.make_node("Erf", [x], ["e"]), helper.make_node("Mul", ["e", "w"], ["y"]),
              helper.make_node("Tanh", ["e"], ["t"])]
    path = save(model(nodes, [vi("x", SHAPE)], [vi("y", SHAPE), vi("t", SHAPE), vi("e", SHAPE)], inits),
                tmp_path / "part.onnx")
    plan = nnos.compile(path)
    ops = [op for n in plan.graph.nodes for op in [n.op] + [e.op for e in n.epilogue]]
    assert ops.count(LOOKUP) == 1 and "Erf" not in ops and {"Mul", "Tanh"} <= set(ops), ops
    feeds, before = _feeds(), _untabulated(path, monkeypatch)
    got, want = plan(feeds), before(feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_two_functions_of_one_grid_are_two_tables(tmp_path, monkeypatch):
    """The rounded x feeds a GELU and, beside it, a Tanh that is a graph output: two tables."""
    nodes, inits = [], [("sqrt2", np.array(1.4142135, np.float32)), ("one", np.array(1, np.float32))]
    x = rounded(nodes, inits, "x", 0, "uint8", 0.04)
    nodes += [helper.make_node("Div", [x, "sqrt2"], ["a"]), helper.make_node("Erf", ["a"], ["e"]),
              helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", [x, "p"], ["y"]),
              helper.make_node("Tanh", [x], ["t"])]
    path = save(model(nodes, [vi("x", SHAPE)], [vi("y", SHAPE), vi("t", SHAPE)], inits), tmp_path / "two.onnx")
    plan = nnos.compile(path)
    ops = [op for n in plan.graph.nodes for op in [n.op] + [e.op for e in n.epilogue]]
    assert ops.count(LOOKUP) == 2 and not {"Erf", "Tanh", "Div"} & set(ops), ops
    feeds, before = _feeds(), _untabulated(path, monkeypatch)
    got, want = plan(feeds), before(feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("case", ["relu", "per_channel_grid", "float_input"])
def test_what_is_not_worth_a_table_or_not_one_grid_s_function_stays(tmp_path, case):
    if case == "per_channel_grid":
        path = qdq_gelu(tmp_path / "gelu.onnx", "uint8", SHAPE, per_channel=True)
    else:
        nodes, inits = [], []
        x = rounded(nodes, inits, "x", 0, "uint8", 0.04) if case == "relu" else "x"
        nodes.append(helper.make_node("Relu" if case == "relu" else "Erf", [x], ["y"]))
        path = save(model(nodes, [vi("x", SHAPE)], [vi("y", SHAPE)], inits), tmp_path / f"{case}.onnx")
    plan = nnos.compile(path)
    assert LOOKUP not in [op for n in plan.graph.nodes for op in [n.op] + [e.op for e in n.epilogue]]


def test_the_lookup_rounds_x_to_its_grid_index_and_clamps_it():
    """The op's definition: table[clip(rint(x / scale), lo, lo + n − 1) − lo], NaN → lo."""
    table = np.arange(10, 15).astype(np.float32)                   # grid indices -2 … 2
    x = np.array([-0.2, -0.1, 0.0, 0.1, 0.2, 0.149, 0.151, 7.0, -7.0, np.nan, np.inf], np.float32)
    node = Node(LOOKUP, "lk", ["x", "s", "t"], ["y"], {"lo": -2})
    y = evaluate(node, [x, np.array(0.1, np.float32), table])[0]
    np.testing.assert_array_equal(y, [10, 11, 12, 13, 14, 13, 14, 14, 10, 10, 14])


@pytest.mark.parametrize("inputs,attrs,says", [
    ((np.zeros(3, np.float64), np.array(0.1, np.float32), np.zeros(4, np.float32)), {"lo": 0}, "float32 x"),
    ((np.zeros(3, np.float32), np.array([0.1, 0.2], np.float32), np.zeros(4, np.float32)), {"lo": 0}, "one scale"),
    ((np.zeros(3, np.float32), np.array(0.1, np.float32), np.zeros(4, np.float32)), {}, "integer attribute lo"),
])
def test_a_malformed_lookup_is_refused_naming_the_node(inputs, attrs, says):
    with pytest.raises(CompileError) as e:
        evaluate(Node(LOOKUP, "bad_lookup", ["x", "s", "t"], ["y"], attrs), list(inputs))
    assert says in str(e.value) and "bad_lookup" in str(e.value), str(e.value)
