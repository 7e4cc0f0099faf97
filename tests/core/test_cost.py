"""The cost model and the op list the issue claims."""
from __future__ import annotations

import nnos
from nnos.ops import OPS

CLAIMED = """Gemm MatMul Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Reciprocal Min Max Relu LeakyRelu Elu Tanh
Sigmoid HardSigmoid HardSwish Softplus Clip Softmax LogSoftmax Conv ConvTranspose MaxPool AveragePool
GlobalAveragePool BatchNormalization LayerNormalization Flatten Reshape Transpose Concat Split Slice Gather
Squeeze Unsqueeze Expand Shape Cast Constant ConstantOfShape Identity ReduceMean ReduceSum ReduceMax Where
Equal Greater Less Mod GRU LSTM""".split()


def test_every_claimed_op_is_registered():
    assert sorted(set(CLAIMED) - set(OPS)) == []


def test_mlp_flops_and_bytes(zoo):
    plan = nnos.compile(zoo["mlp_s"], check=False)
    cost = plan.meta["cost"]
    # 2·(8·64 + 64·64 + 64·2) multiply-adds, plus one op per element for each tanh
    assert cost["flops"] == 2 * (8 * 64 + 64 * 64 + 64 * 2) + 2 * 64
    assert [s["ops"] for s in cost["steps"]] == ["Gemm+Tanh", "Gemm+Tanh", "Gemm"]
    assert cost["weight_bytes"] == 4 * (9 * 64 + 65 * 64 + 65 * 2)
    assert all(s["bytes"] > 0 for s in cost["steps"])
    assert cost["bytes"] == sum(s["bytes"] for s in cost["steps"])


def test_conv_flops(zoo):
    plan = nnos.compile(zoo["cnn_s"], check=False)
    convs = [s for s in plan.meta["cost"]["steps"] if s["ops"].startswith("Conv")]
    assert convs[0]["flops"] == 2 * 16 * 32 * 32 * 3 * 5 * 5 + 16 * 32 * 32   # MACs·2 + ReLU
