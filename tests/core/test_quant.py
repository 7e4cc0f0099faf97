"""int8 models (ops/quant.py, passes/quant.py) on the numpy reference: onnxruntime's quantizer's
three forms match onnxruntime running them (its integer kernels' operators: ONNX's reference
evaluator, tests/support/quantized.py), QDQ products become integer products, and what
nnos cannot run the way the model says is refused at compile time, naming the node."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.backends import prepare
from nnos.backends.verify import TOLERANCE
from nnos.errors import CompileError
from nnos_models.zoo.build import build
from tests.support.onnx_models import model, save, vi
from tests.support.quantized import input_feed, ops, reference_outputs, quantized


@pytest.fixture(scope="module")
def floats(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("zoo")), ["mlp_m", "cnn_s"])


def _numpy_outputs(plan, feeds):
    exe = prepare(plan, "numpy")
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    return [np.array(exe.outputs[o]) for o in plan.graph.outputs]


def _within_quantization(got, want):
    atol = TOLERANCE["quantized"] * max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("name", ["mlp_m", "cnn_s"])
@pytest.mark.parametrize("variant", ["qdq_u8", "qdq_s8", "dynamic"])
def test_onnxruntime_quantized_models_match_onnxruntime(floats, tmp_path, name, variant):
    path = quantized(floats[name], str(tmp_path / f"{name}.onnx"), variant)
    plan = nnos.compile(path)
    steps = {n.op for n in plan.graph.nodes}
    products = {"MatMulInteger"} | ({"ConvInteger"} if name == "cnn_s" else set())
    assert products <= steps, steps                       # the products run on the 8-bit values
    assert not steps & {"Gemm", "MatMul", "Conv"}, steps
    assert plan.meta["self_check"]["rtol_for"] == "quantized"
    for seed in range(3):
        feeds = input_feed(path, seed)
        for got, want in zip(_numpy_outputs(plan, feeds), reference_outputs(path, feeds)):
            _within_quantization(got, want)


def _qlinear_models(tmp_path):
    """A MatMul policy and a Conv policy, each quantized to the QOperator form."""
    rng = np.random.default_rng(3)
    mm = model([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("MatMul", ["r", "w2"], ["y"])],
               [vi("x", [1, 24])], [vi("y", [1, 6])],
               [("w1", rng.standard_normal((24, 40)).astype(np.float32) * 0.3),
                ("w2", rng.standard_normal((40, 6)).astype(np.float32) * 0.3)], opset=13)
    cv = model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
                helper.make_node("Relu", ["c"], ["y"])],
               [vi("x", [1, 5, 9, 9])], [vi("y", [1, 7, 5, 5])],
               [("w", rng.standard_normal((7, 5, 3, 3)).astype(np.float32) * 0.3),
                ("b", rng.standard_normal(7).astype(np.float32))], opset=13)
    return {"matmul": save(mm, tmp_path / "mm.onnx"), "conv": save(cv, tmp_path / "cv.onnx")}


@pytest.mark.parametrize("which,op", [("matmul", "QLinearMatMul"), ("conv", "QLinearConv")])
def test_qlinear_ops_are_lowered_and_match_the_onnx_reference(tmp_path, which, op):
    src = _qlinear_models(tmp_path)[which]
    path = quantized(src, str(tmp_path / "q.onnx"), "qop_u8")
    assert op in ops(path)
    plan = nnos.compile(path)
    assert op not in {n.op for n in plan.graph.nodes}
    feeds = input_feed(path, 1)
    for got, want in zip(_numpy_outputs(plan, feeds), reference_outputs(path, feeds)):
        _within_quantization(got, want)


def test_a_dequantized_weight_of_a_float_product_is_folded(tmp_path):
    """A weight dequantized from int8 feeding a product whose activation is float: not an
    integer product — its DequantizeLinear is folded to a float constant, no step left."""
    w = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
    m = model([helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"]), helper.make_node("MatMul", ["x", "w"], ["y"])],
              [vi("x", [1, 3])], [vi("y", [1, 4])],
              [("wq", w), ("s", np.array(0.5, np.float32)), ("z", np.array(1, np.int8))], opset=13)
    plan = nnos.compile(save(m, tmp_path / "m.onnx"))
    assert [n.op for n in plan.graph.nodes] == ["MatMul"]
    x = np.array([[1.0, 2.0, -1.0]], np.float32)
    np.testing.assert_allclose(plan({"x": x})["y"], x @ ((w.astype(np.float32) - 1) * 0.5), rtol=1e-6)


def _quantize_model(tmp_path, scale, zp=None, attrs=None, x_shape=(2, 3, 4)):
    ins = ["x", "s"] + (["z"] if zp is not None else [])
    inits = [("s", scale)] + ([("z", zp)] if zp is not None else [])
    m = model([helper.make_node("QuantizeLinear", ins, ["y"], name="q", **(attrs or {}))],
              [vi("x", list(x_shape))], [vi("y", list(x_shape), TensorProto.UINT8)], inits, opset=21)
    return save(m, tmp_path / "q.onnx")


@pytest.mark.parametrize("scale,zp,attrs,says", [
    (np.ones(4, np.float32), None, {"axis": 1}, "the per-axis scale has 4 values, but axis 1"),
    (np.ones(3, np.float32), np.zeros(2, np.uint8), {"axis": 1}, "zero point"),
    (np.ones((3, 2), np.float32), None, {"axis": 2, "block_size": 2}, "blocked quantization (block_size=2)"),
    (np.ones(1, np.float32), None, {"output_dtype": TensorProto.INT32}, "quantizing to int32 is not supported"),
    (np.ones(1, np.int32), None, {}, "scale must be a float tensor"),
])
def test_bad_quantization_parameters_are_refused_naming_the_node(tmp_path, scale, zp, attrs, says):
    with pytest.raises(CompileError) as e:
        nnos.compile(_quantize_model(tmp_path, scale, zp, attrs))
    assert "'q'" in str(e.value) and says in str(e.value), str(e.value)


def test_per_channel_weight_scales_of_the_wrong_length_are_refused(tmp_path):
    m = model([helper.make_node("DequantizeLinear", ["wq", "s"], ["w"], name="dq_w", axis=0),
               helper.make_node("Conv", ["x", "w"], ["y"])],
              [vi("x", [1, 2, 4, 4])], [vi("y", [1, 3, 2, 2])],
              [("wq", np.ones((3, 2, 3, 3), np.int8)), ("s", np.ones(2, np.float32))], opset=13)
    with pytest.raises(CompileError) as e:
        nnos.compile(save(m, tmp_path / "m.onnx"))
    assert "'dq_w'" in str(e.value) and "has 2 values, but axis 0" in str(e.value) and "has 3" in str(e.value)


def test_quantize_rounds_half_to_even_saturates_and_sends_nan_to_the_low_bound(tmp_path):
    x = np.array([[0.5, 1.5, 2.5, -0.5, 1000.0, -1000.0, np.nan, 3.49]], np.float32)
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], [vi("x", [1, 8])],
              [vi("y", [1, 8], TensorProto.INT8)], [("s", np.array(1.0, np.float32)), ("z", np.array(0, np.int8))])
    y = nnos.compile(save(m, tmp_path / "q.onnx"))({"x": x})["y"]
    assert y.tolist() == [[0, 2, 2, 0, 127, -128, -128, 3]]


def test_a_float16_qdq_product_kept_as_the_model_says(tmp_path):
    """With --precision model a float16 QDQ product is not made an integer one: its dequantized
    output would become float32 and change the model's output type."""
    half = np.float16
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
               helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
               helper.make_node("DequantizeLinear", ["wq", "s"], ["w"]),
               helper.make_node("MatMul", ["xd", "w"], ["y"])],
              [vi("x", [1, 4], TensorProto.FLOAT16)], [vi("y", [1, 3], TensorProto.FLOAT16)],
              [("s", np.array(0.125, half)), ("z", np.array(0, np.int8)),
               ("wq", np.arange(-6, 6, dtype=np.int8).reshape(4, 3))], opset=19)
    plan = nnos.compile(save(m, tmp_path / "m.onnx"), precision="model")
    assert plan.graph.type_of("y").dtype == half
    assert "MatMulInteger" not in {n.op for n in plan.graph.nodes}
    x = np.array([[0.5, -1.0, 0.25, 2.0]], half)
    w = np.arange(-6, 6).reshape(4, 3) * 0.125
    np.testing.assert_allclose(plan({"x": x})["y"].astype(np.float32), x.astype(np.float32) @ w, rtol=1e-2)


# --- a QDQ model's roundings (passes/qdq.py) ------------------------------------------------------
def _qdq_graph(*, grids=("a", "a"), moves=("Reshape", "Transpose"), per_channel=False, also_read=False):
    """x → Mul → Q/DQ (grid 0) → moves → Q/DQ (grid 1) → Relu → y: a QDQ export's rounding
    after a float op and again after each op that only moves values."""
    from nnos.ir import Graph, Node, TensorType
    from nnos.passes import infer_types
    params = {"a": (np.float32(0.05), np.uint8(3)), "b": (np.float32(0.07), np.uint8(3)),
              "c": (np.float32(0.05), np.int8(3))}
    consts = {"two": np.float32(2), "shape": np.array([2, 3, 4], np.int64)}
    for k, (s, z) in params.items():
        consts[f"s_{k}"], consts[f"z_{k}"] = np.array(s), np.array(z)
    if per_channel:
        consts["s_a"], consts["z_a"] = np.linspace(0.02, 0.1, 3).astype(np.float32), np.arange(3).astype(np.uint8)
    nodes, t = [Node("Mul", "m", ["x", "two"], ["m"])], "m"
    for k, grid in enumerate(grids):
        axis = {"axis": 1} if per_channel else {}
        nodes += [Node("QuantizeLinear", f"q{k}", [t, f"s_{grid}", f"z_{grid}"], [f"q{k}"], axis),
                  Node("DequantizeLinear", f"dq{k}", [f"q{k}", f"s_{grid}", f"z_{grid}"], [f"d{k}"], axis)]
        t = f"d{k}"
        if k == 0:
            for j, op in enumerate(moves):
                ins = [t, "shape"] if op == "Reshape" else [t, t] if op == "Concat" else [t]
                attrs = {"perm": [0, 1, 2]} if op == "Transpose" else {"axis": 1} if op == "Concat" else {}
                nodes.append(Node(op, f"mv{j}", ins, [f"mv{j}"], attrs))
                t = f"mv{j}"
    nodes.append(Node("Relu", "r", [t], ["y"]))
    outputs = ["y"] + (["q0"] if also_read else [])
    return infer_types(Graph("g", ["x"], outputs, nodes, {"x": TensorType(np.dtype(np.float32), (2, 3, 4))}, consts))


def _feeds():
    x = np.random.default_rng(5).standard_normal((2, 3, 4)).astype(np.float32) * 6
    x[0, 0, :3] = [np.nan, 1e6, -1e6]                  # NaN to the low bound, saturation both ways
    return {"x": x}


def _same_outputs(a, b):
    from nnos.compiler import run_direct
    ya, yb = run_direct(a, _feeds()), run_direct(b, _feeds())
    for k in ya:
        np.testing.assert_array_equal(ya[k], yb[k], err_msg=k)


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_quantize_dequantize_pair_becomes_one_elementwise_rounding(per_channel):
    from nnos.ops.quant import FAKE_QUANT
    from nnos.passes import fake_quantize
    g = _qdq_graph(moves=(), per_channel=per_channel)
    f = fake_quantize(g)
    assert [n.op for n in f.nodes] == ["Mul", FAKE_QUANT, FAKE_QUANT, "Relu"]
    fq = f.nodes[1]
    assert fq.attrs == {"to": TensorProto.UINT8} and fq.outputs == ["d0"]
    assert f.consts[fq.inputs[1]].shape == ((3, 1) if per_channel else ())     # broadcasts against x
    _same_outputs(g, f)                                                         # bitwise the two steps


def test_a_pair_stays_when_the_8_bit_tensor_is_read_elsewhere_or_the_grids_differ():
    from nnos.passes import fake_quantize
    g = _qdq_graph(moves=(), also_read=True)
    assert [n.op for n in fake_quantize(g).nodes][:3] == ["Mul", "QuantizeLinear", "DequantizeLinear"]
    g = _qdq_graph(moves=())
    g.nodes[2].inputs[1] = "s_b"                                                # DQ by another scale
    assert [n.op for n in fake_quantize(g).nodes][:3] == ["Mul", "QuantizeLinear", "DequantizeLinear"]


@pytest.mark.parametrize("moves", [("Reshape", "Transpose"), ("Concat",), ()])
def test_a_rounding_of_values_already_on_its_grid_goes(moves):
    from nnos.ops.quant import FAKE_QUANT
    from nnos.passes import drop_requantize, fake_quantize
    g = _qdq_graph(moves=moves)
    f = drop_requantize(fake_quantize(g))
    assert [n.op for n in f.nodes].count(FAKE_QUANT) == 1
    assert f.nodes[-1].inputs == [f.nodes[-2].outputs[0]]                       # Relu reads the moved values
    _same_outputs(g, f)


@pytest.mark.parametrize("grids,per_channel", [(("a", "b"), False), (("a", "c"), False), (("a", "a"), True)])
def test_a_rounding_to_another_grid_stays(grids, per_channel):
    """Another scale, another type (int8 beside uint8, same zero point), or per-channel grids
    (a move may carry a channel's values to another channel)."""
    from nnos.ops.quant import FAKE_QUANT
    from nnos.passes import drop_requantize, fake_quantize
    g = _qdq_graph(grids=grids, per_channel=per_channel, moves=("Transpose",) if per_channel else ("Reshape",))
    f = drop_requantize(fake_quantize(g))
    assert [n.op for n in f.nodes].count(FAKE_QUANT) == 2
    _same_outputs(g, f)


def test_a_model_may_not_use_nnos_own_ops(tmp_path):
    """nnos.QuantizeDequantize is made by a pass, never read from a model (the ONNX checker
    knows no such op)."""
    from nnos.errors import ModelError
    m = model([helper.make_node("nnos.QuantizeDequantize", ["x", "s", "z"], ["y"], name="fq", to=2)],
              [vi("x", [4])], [vi("y", [4])], [("s", np.array(0.1, np.float32)), ("z", np.array(0, np.uint8))])
    with pytest.raises(ModelError) as e:
        nnos.compile(save(m, tmp_path / "fq.onnx"))
    assert "No Op registered for nnos.QuantizeDequantize" in str(e.value), str(e.value)


def test_a_weight_two_products_share_makes_both_integer(tmp_path):
    """torch's export makes one initializer of two equal weights (a transformer's layers start as
    copies): the second product reads Identity(the first's dequantized weight), which the
    quantizer rounds again as an activation. Both products become integer ones; the plan's
    outputs are the model's own."""
    rng = np.random.default_rng(2)
    wq = rng.integers(-127, 128, size=(16, 8)).astype(np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"]),
             helper.make_node("MatMul", ["xd", "w"], ["h"]),
             helper.make_node("Identity", ["w"], ["w2"]),
             helper.make_node("QuantizeLinear", ["w2", "w2s", "w2z"], ["w2q"]),
             helper.make_node("DequantizeLinear", ["w2q", "w2s", "w2z"], ["w2d"]),
             helper.make_node("MatMul", ["xd", "w2d"], ["h2"]),
             helper.make_node("Add", ["h", "h2"], ["y"])]
    m = model(nodes, [vi("x", [3, 16])], [vi("y", [3, 8])],
              [("xs", np.array(0.05, np.float32)), ("xz", np.array(128, np.uint8)), ("wq", wq),
               ("ws", np.array(0.01, np.float32)), ("w2s", np.array(0.01, np.float32)), ("w2z", np.array(128, np.uint8))])
    path = save(m, tmp_path / "shared.onnx")
    plan = nnos.compile(path)
    assert [n.op for n in plan.graph.nodes].count("MatMulInteger") == 2
    x = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
    _within_quantization(plan({"x": x})["y"], reference_outputs(path, {"x": x})[0])


def test_a_plan_whose_roundings_all_became_one_op_is_checked_as_quantized():
    """Every Q → DQ pair made nnos.QuantizeDequantize: the plan still rounds to 8-bit grids, so a
    backend is checked against the reference within quantization tolerance (a last-bit
    difference before a rounding may move a value one step), not float32's."""
    from nnos.backends.verify import tolerance
    from nnos.passes import fake_quantize
    g = fake_quantize(_qdq_graph(moves=()))
    assert "QuantizeLinear" not in [n.op for n in g.nodes]
    assert tolerance(g)[1] == "quantized"
