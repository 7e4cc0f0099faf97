"""What the generated GPU kernels (vulkan, cuda) are checked on: the ONNX node cases whose every
op they claim, and the bundled models."""
from __future__ import annotations

from nnos.backends.vulkan import kernels
from tests.support.onnx_cases import CASES, excluded_reason
from tests.support.paths import ROOT

CLAIMED_OPS = kernels.UNARY.keys() | kernels.BINARY.keys() | kernels.COPIES | kernels.POOLS | kernels.REDUCES | {
    "Gemm", "MatMul", "Conv", "Concat", "Transpose", "Softmax", "Clip", "LayerNormalization", "Gather"}
MODELS = [f"{ROOT}/models/cartpole/cartpole.onnx", f"{ROOT}/models/vision/follow.onnx"] + [
    f"{ROOT}/models/zoo/{m}.onnx" for m in ("mlp_s", "res5_s", "mbv2_s", "act_s", "act_s.dynamo")]


def claimed(case) -> bool:
    """A small case whose every op (inputs as they are fed) the kernels cover."""
    if excluded_reason(case):
        return False
    return {n.op_type for n in case.model.graph.node} <= CLAIMED_OPS


CLAIMED = [c for c in CASES if claimed(c)]
