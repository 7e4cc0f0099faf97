"""The generated kernels, one emitter per op: (program, node) → a block of C. Every op the
numpy reference defines has one; each module says which forms it has and when the fast one
applies.
"""
from __future__ import annotations

from ...ops import OPS
from . import conv, einsum, elementwise, gemm, movement, pool, qfeed, quant, reduce, rnn, scan

EMITTERS = {
    **{op: elementwise.elementwise for op, d in OPS.items() if d.pointwise},     # the reference says which
    "Gemm": gemm.gemm, "MatMul": gemm.matmul, "Einsum": einsum.einsum,
    "Conv": conv.conv, "ConvTranspose": conv.conv_transpose,
    "GRU": rnn.rnn, "LSTM": rnn.rnn,
    "MaxPool": pool.pool, "AveragePool": pool.pool, "GlobalAveragePool": pool.global_average,
    "ReduceSum": reduce.reduce, "ReduceMean": reduce.reduce, "ReduceMax": reduce.reduce, "ReduceMin": reduce.reduce,
    "Softmax": reduce.softmax, "LogSoftmax": reduce.softmax,
    "LayerNormalization": reduce.layer_norm, "RMSNormalization": reduce.rms_norm, "BatchNormalization": reduce.batch_norm,
    **{op: movement.view for op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity")},
    "Trilu": scan.trilu, "CumSum": scan.cumsum,
    "Transpose": movement.transpose, "Expand": movement.expand, "Slice": movement.slice_,
    "Concat": movement.concat, "Split": movement.split, "Gather": movement.gather, "Pad": movement.pad,
    "Shape": movement.constant, "Constant": movement.constant, "Range": movement.constant,
    "ConstantOfShape": movement.constant_of_shape,
    "QuantizeLinear": qfeed.quantize_linear, "DequantizeLinear": quant.quantize_linear, "Cast": quant.cast,
    "MatMulInteger": quant.matmul_integer, "ConvInteger": quant.conv_integer,
}
