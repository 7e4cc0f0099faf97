"""Each pass alone, on small graphs built here."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import nnos
from nnos.compiler import run_direct
from nnos.frontend import import_onnx
from nnos.ir import Graph, Node, TensorType
from nnos.passes import (eliminate_dead, fold_batchnorm, fold_constants, fuse_bias,
                         fuse_elementwise, infer_types, prepack_gemm)
from tests.support.onnx_models import assert_close
from tests.support.onnx_models import model, rand, save, vi

F32 = np.dtype(np.float32)


def _graph(nodes, inputs, outputs, consts=()):
    return Graph("g", [n for n, _ in inputs], outputs, nodes,
                 {n: TensorType(F32, s) for n, s in inputs}, dict(consts))


def test_infer_types_gives_every_tensor_a_static_type():
    g = _graph([Node("Conv", "c", ["x", "w"], ["y"], {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
                Node("Flatten", "f", ["y"], ["z"])], [("x", (1, 3, 8, 8))], ["z"], [("w", rand(4, 3, 3, 3))])
    t = infer_types(g)
    assert t.types["y"] == TensorType(F32, (1, 4, 4, 4))
    assert t.types["z"] == TensorType(F32, (1, 64))


def test_fold_constants_evaluates_constant_subgraphs():
    g = _graph([Node("Add", "a", ["c1", "c2"], ["s"]), Node("Mul", "m", ["x", "s"], ["y"])],
               [("x", (2,))], ["y"], [("c1", np.float32([1, 2])), ("c2", np.float32([3, 4]))])
    f = fold_constants(g)
    assert [n.op for n in f.nodes] == ["Mul"]
    np.testing.assert_array_equal(f.consts["s"], [4, 6])


def test_fold_keeps_scalar_shapes():
    # regression: folding through np.ascontiguousarray turned 0-d Gather results into 1-d
    g = _graph([Node("Gather", "g", ["c", "i"], ["y"], {"axis": 0})], [], ["y"],
               [("c", np.int64([5, 6, 7])), ("i", np.array(1, np.int64))])
    f = fold_constants(g)
    assert f.consts["y"].shape == ()
    assert f.consts["y"] == 6


def test_dead_nodes_and_constants_are_removed():
    g = _graph([Node("Relu", "used", ["x"], ["y"]), Node("Add", "dead", ["x", "c"], ["unused"])],
               [("x", (3,))], ["y"], [("c", np.ones(3, np.float32))])
    d = eliminate_dead(infer_types(g))
    assert [n.name for n in d.nodes] == ["used"]
    assert "c" not in d.consts


def _check_same(before: Graph, after: Graph, feeds):
    ref = run_direct(before, feeds)
    got = run_direct(after, feeds) if not any(n.epilogue for n in after.nodes) else None
    return ref, got


def test_batchnorm_folds_into_conv():
    c = 4
    bn = [("s", rand(c, seed=1) + 2), ("b", rand(c, seed=2)), ("m", rand(c, seed=3)), ("v", np.abs(rand(c, seed=4)) + .5)]
    g = _graph([Node("Conv", "conv", ["x", "w", "cb"], ["y"], {"pads": [1, 1, 1, 1]}),
                Node("BatchNormalization", "bn", ["y", "s", "b", "m", "v"], ["z"], {"epsilon": 1e-5})],
               [("x", (1, 3, 6, 6))], ["z"], [("w", rand(c, 3, 3, 3)), ("cb", rand(c, seed=9))] + bn)
    t = infer_types(g)
    f = fold_batchnorm(t)
    assert [n.op for n in f.nodes] == ["Conv"]
    x = {"x": rand(1, 3, 6, 6, seed=5)}
    assert_close(run_direct(f, x)["z"], run_direct(t, x)["z"], rtol=1e-5)


def test_batchnorm_folds_into_gemm():
    bn = [("s", rand(5, seed=1)), ("b", rand(5, seed=2)), ("m", rand(5, seed=3)), ("v", np.abs(rand(5, seed=4)) + .5)]
    g = _graph([Node("Gemm", "fc", ["x", "w", "c"], ["y"], {"transB": 1, "alpha": 0.5}),
                Node("BatchNormalization", "bn", ["y", "s", "b", "m", "v"], ["z"])],
               [("x", (2, 3))], ["z"], [("w", rand(5, 3)), ("c", rand(5, seed=7))] + bn)
    t = infer_types(g)
    f = fold_batchnorm(t)
    assert [n.op for n in f.nodes] == ["Gemm"]
    x = {"x": rand(2, 3, seed=6)}
    assert_close(run_direct(f, x)["z"], run_direct(t, x)["z"], rtol=1e-5)


def test_matmul_plus_bias_becomes_gemm_and_packs():
    g = _graph([Node("MatMul", "mm", ["x", "w"], ["h"]), Node("Add", "add", ["h", "b"], ["y"])],
               [("x", (1, 4))], ["y"], [("w", rand(4, 3)), ("b", rand(3, seed=1))])
    t = infer_types(g)
    f = fuse_bias(t)
    assert [n.op for n in f.nodes] == ["Gemm"]
    x = {"x": rand(1, 4, seed=2)}
    assert_close(run_direct(f, x)["y"], run_direct(t, x)["y"])
    p = prepack_gemm(f)
    assert p.nodes[0].attrs == {}, "an untransposed Gemm is already in the packed form"
    assert p.consts[p.nodes[0].inputs[1]].shape == (4, 3)


def test_prepack_gemm_folds_trans_alpha_beta():
    g = _graph([Node("Gemm", "fc", ["x", "w", "c"], ["y"], {"transB": 1, "alpha": 2.0, "beta": 0.5})],
               [("x", (3, 4))], ["y"], [("w", rand(5, 4)), ("c", rand(5, seed=1))])
    t = infer_types(g)
    p = prepack_gemm(t)
    assert p.nodes[0].attrs == {}
    assert p.consts[p.nodes[0].inputs[1]].shape == (4, 5)
    x = {"x": rand(3, 4, seed=2)}
    assert_close(run_direct(p, x)["y"], run_direct(t, x)["y"])


def test_elementwise_chain_fuses_into_one_step(tmp_path, ort_session):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Add", ["c", "res"], ["a"]),        # residual operand from the graph input
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Sub", ["k", "r"], ["s"]),          # chain value as the second input
             helper.make_node("LeakyRelu", ["s"], ["y"], alpha=0.2)]
    m = model(nodes, [vi("x", [1, 2, 5, 5]), vi("res", [1, 3, 3, 3])], [vi("y", [1, 3, 3, 3])],
              [("w", rand(3, 2, 3, 3)), ("b", rand(3, seed=1)), ("k", np.float32([0.5]))])
    path = save(m, tmp_path / "m.onnx")
    g, _ = import_onnx(path)
    fused = fuse_elementwise(infer_types(g))
    assert len(fused.nodes) == 1
    assert [e.op for e in fused.nodes[0].epilogue] == ["Add", "Relu", "Sub", "LeakyRelu"]
    assert fused.nodes[0].epilogue[2].pos == 1
    plan = nnos.compile(path)
    feeds = {"x": rand(1, 2, 5, 5, seed=3), "res": rand(1, 3, 3, 3, seed=4)}
    assert_close(plan(feeds)["y"], ort_session(path).run(None, feeds)[0])


def test_chain_stops_at_a_tensor_read_twice():
    g = _graph([Node("Relu", "r", ["x"], ["a"]), Node("Tanh", "t", ["a"], ["b"]), Node("Add", "s", ["a", "b"], ["y"])],
               [("x", (4,))], ["y"])
    f = fuse_elementwise(infer_types(g))
    assert [n.op for n in f.nodes][0] == "Relu"
    assert not f.nodes[0].epilogue


@pytest.mark.parametrize("n_nodes", [3])
def test_optimized_graph_matches_direct_evaluation(zoo, n_nodes):
    for name in ("mlp_s", "cnn_s", "gru_s"):
        plan = nnos.compile(zoo[name])   # the compiler's self-check compares plan vs direct evaluation
        assert plan.meta["self_check"]["round_trip"] == "bitwise"


def _gelu_nodes(order: str, scale=("Div", 2 ** 0.5)):
    op, c = scale
    nodes = [Node(op, "s", ["x", "c"], ["xs"]), Node("Erf", "e", ["xs"], ["er"]), Node("Add", "a", ["er", "one"], ["ap"])]
    if order == "x_then_half":          # torch.onnx (TorchScript): (x · A) · 0.5
        nodes += [Node("Mul", "m", ["x", "ap"], ["xm"]), Node("Mul", "h", ["xm", "half"], ["y"])]
    elif order == "half_x_first":       # (x · 0.5) · A
        nodes += [Node("Mul", "h", ["x", "half"], ["xh"]), Node("Mul", "m", ["xh", "ap"], ["y"])]
    else:                               # (A · 0.5) · x
        nodes += [Node("Mul", "h", ["ap", "half"], ["ah"]), Node("Mul", "m", ["ah", "x"], ["y"])]
    consts = [("c", np.float32(c)), ("one", np.float32(1)), ("half", np.float32(0.5))]
    return infer_types(_graph(nodes, [("x", (2, 40))], ["y"], consts))


@pytest.mark.parametrize("order", ["x_then_half", "half_x_first", "a_half_then_x"])
@pytest.mark.parametrize("scale", [("Div", 2 ** 0.5), ("Mul", 0.5 ** 0.5)])
def test_an_exported_gelu_becomes_one_gelu(order, scale):
    from nnos.passes import fuse_gelu
    g = _gelu_nodes(order, scale)
    f = fuse_gelu(g)
    assert [n.op for n in f.nodes] == ["Gelu"] and f.nodes[0].inputs == ["x"] and f.nodes[0].outputs == ["y"]
    x = {"x": np.random.default_rng(0).standard_normal((2, 40)).astype(np.float32) * 3}
    assert_close(run_direct(f, x)["y"], run_direct(g, x)["y"], rtol=1e-6)


def test_a_look_alike_that_is_not_gelu_stays():
    from nnos.passes import fuse_gelu
    g = _gelu_nodes("x_then_half", ("Div", 1.5))                      # x / 1.5: another function
    assert [n.op for n in fuse_gelu(g).nodes] == [n.op for n in g.nodes]
    g = _gelu_nodes("x_then_half")
    g.outputs.append("er")                                            # erf(…) is read elsewhere too
    assert "Gelu" not in [n.op for n in fuse_gelu(g).nodes]
