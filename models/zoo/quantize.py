"""Quantize a float policy to int8 with onnxruntime's quantizer, in the forms nnos compiles:

    python -m nnos_models.zoo.quantize MODEL.onnx OUT.onnx [--variant qdq_u8|qdq_s8|qop_u8|dynamic]

- qdq_u8 (the default): QuantizeLinear/DequantizeLinear pairs around every product (the QDQ
  format), uint8 activations, int8 weights with one scale per output channel;
- qdq_s8: int8 activations, one scale per weight tensor;
- qop_u8: the QOperator format (QLinearConv, QLinearMatMul; a Gemm becomes onnxruntime's own
  com.microsoft QGemm, which nnos refuses by name: use QDQ for models with Gemm);
- dynamic: weights quantized ahead, activations at run time (DynamicQuantizeLinear + MatMulInteger).

Static variants are calibrated on standard-normal inputs (seeded); for a real policy, calibrate
on recorded observations instead (pass a CalibrationDataReader of them to quantize_static).
nnos turns each product into an integer one (passes/quant.py) that the cpu backend runs with
VNNI/AVX2 integer instructions.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile

import numpy as np
import onnx


def input_feed(path: str, seed: int = 0) -> dict:
    """Standard-normal values for every input of the model (symbolic dimensions as 1)."""
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in s.get_inputs()}


def _reader(path: str, n: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([input_feed(path, seed) for seed in range(100, 100 + n)])

        def get_next(self):
            return next(self.feeds, None)
    return Reader()


VARIANTS = ("qdq_u8", "qdq_s8", "qop_u8", "dynamic")


def quantized(src: str, out: str, variant: str = "qdq_u8", calibration: int = 8) -> str:
    """``src`` quantized as ``variant`` into ``out``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    logging.getLogger().setLevel(logging.ERROR)            # the quantizer's advice to pre-process
    with tempfile.TemporaryDirectory(prefix="nnos-quant-") as private:
        # onnxruntime's quantizer writes "<model>-inferred.onnx" beside the model it reads, then
        # deletes it: two runs on one source would delete each other's file (and a read-only
        # source tree would refuse it), so it reads a private copy
        copy = os.path.join(private, os.path.basename(src))
        onnx.save(onnx.load(src), copy)
        if variant == "dynamic":
            quantize_dynamic(copy, out, weight_type=QuantType.QInt8)
            return out
        fmt, per_channel, act = {"qdq_u8": (QuantFormat.QDQ, True, QuantType.QUInt8),
                                 "qdq_s8": (QuantFormat.QDQ, False, QuantType.QInt8),
                                 "qop_u8": (QuantFormat.QOperator, True, QuantType.QUInt8)}[variant]
        quantize_static(copy, out, _reader(src, calibration), quant_format=fmt,
                        per_channel=per_channel, activation_type=act, weight_type=QuantType.QInt8)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--variant", choices=VARIANTS, default="qdq_u8")
    args = ap.parse_args(argv)
    print(quantized(args.model, args.out, args.variant))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
