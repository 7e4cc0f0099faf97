"""A float32 policy as a float16 export is: its weights, inputs, outputs, constants and casts to
float in float16 (what torch's ``model.half()`` then ``torch.onnx.export`` writes).

    python -m nnos_models.zoo.precision MODEL.onnx OUT.onnx

nnos computes such a model in float32 and stores float16 where the model says so (issue 18);
`nnos compile --precision fp32` upcasts it for a CPU without float16 arithmetic.
"""
from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper


def to_float16(m: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``m`` with its float32 weights, inputs and outputs in float16."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    g = m.graph
    for i, t in enumerate(g.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            g.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.float16), t.name))
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    for node in g.node:                 # constants made inside, and casts to float, in float16 too
        for a in node.attribute:
            if a.name == "to" and node.op_type == "Cast" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
            elif a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
    return m


def float16(src: str, out: str) -> str:
    """``src`` in float16 into ``out``."""
    onnx.save(to_float16(onnx.load(src)), out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    print(float16(args.model, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
