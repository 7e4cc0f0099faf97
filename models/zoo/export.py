"""Export the zoo's PyTorch policies to ONNX with both of torch's exporters — how a policy you
trained gets to nnos.

    pip install torch==2.13.0 onnxscript       # a development machine, not the robot
    python -m nnos_models.zoo.export [OUTDIR]   # default: models/zoo/

For each policy in torch_policies.py it writes two files, and checks each with onnxruntime
against torch's own output on a seeded input:

  NAME.onnx          torch.onnx.export(..., dynamo=False, opset_version=17): the TorchScript
                     exporter (GELU → Erf, attention as MatMul/Softmax, BatchNorm kept)
  NAME.dynamo.onnx   torch.onnx.export(..., dynamo=True): the torch.export-based exporter
                     (its own opset, decompositions and constant handling)

Inputs are ``image`` float32 [1, 3, 64, 64] and ``state`` float32 [1, 6]; the output
``actions`` (act_s: [1, 20, 6], a chunk; the others [1, 6]). Then compile either with
``nnos compile NAME.onnx -o NAME.plan``. Committed in models/zoo (this script's output, seed 0;
1.6 MB): act_s.onnx, act_s.dynamo.onnx, mbv2_s.onnx, res5_s.onnx — the exporters differ most on
the transformer (opset 17 Erf/CumSum/Sin/Cos against opset 20 Gelu with the embedding already
folded), hardly on the CNNs; tests/models/test_zoo_exports.py checks them against onnxruntime.
"""
from __future__ import annotations

import os
import sys

import numpy as np


def export(outdir: str, names=None) -> dict[str, str]:
    import onnxruntime as ort
    import torch

    from .torch_policies import IMAGE, POLICIES, STATE, policy
    os.makedirs(outdir, exist_ok=True)
    paths = {}
    for name in names or POLICIES:
        m = policy(name)
        args = (torch.randn(1, *IMAGE, generator=torch.Generator().manual_seed(1)),
                torch.randn(1, STATE, generator=torch.Generator().manual_seed(2)))
        with torch.no_grad():
            want = m(*args).numpy()
        for suffix, dynamo in ((".onnx", False), (".dynamo.onnx", True)):
            path = os.path.join(outdir, name + suffix)
            kw = {"dynamo": True, "external_data": False} if dynamo else {"dynamo": False, "opset_version": 17}
            torch.onnx.export(m, args, path, input_names=["image", "state"], output_names=["actions"], **kw)
            got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
                None, {"image": args[0].numpy(), "state": args[1].numpy()})[0]
            err = float(np.abs(got - want).max())
            if err > 1e-4 * max(1.0, float(np.abs(want).max())):
                raise SystemExit(f"{path}: onnxruntime differs from torch by {err:.3g}")
            paths[name + suffix] = path
    return paths


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for key, path in export(out).items():
        print(f"{key}: {path} ({os.path.getsize(path):,} bytes)")
