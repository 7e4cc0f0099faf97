"""Quantized models as onnxruntime's quantizer writes them (QDQ, QOperator, dynamic), from the
zoo's float models and small generated ones, and the inputs they are calibrated on."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

logging.getLogger().setLevel(logging.ERROR)        # the quantizer's advice to pre-process


def input_feed(path: str, seed: int = 0) -> dict:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    return {i.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


class _Reader(CalibrationDataReader):
    def __init__(self, path: str, n: int = 8):
        self.feeds = iter([input_feed(path, seed) for seed in range(100, 100 + n)])

    def get_next(self):
        return next(self.feeds, None)


VARIANTS = {
    # (format, per-channel weights, activation type)
    "qdq_u8": (QuantFormat.QDQ, True, QuantType.QUInt8),
    "qdq_s8": (QuantFormat.QDQ, False, QuantType.QInt8),
    "qop_u8": (QuantFormat.QOperator, True, QuantType.QUInt8),
}


def quantized(src: str, out: str, variant: str) -> str:
    """``src`` quantized by onnxruntime as ``variant`` (one of VARIANTS, or "dynamic") into ``out``."""
    if variant == "dynamic":
        quantize_dynamic(src, out, weight_type=QuantType.QInt8)
    else:
        fmt, per_channel, act = VARIANTS[variant]
        quantize_static(src, out, _Reader(src), quant_format=fmt, per_channel=per_channel,
                        activation_type=act, weight_type=QuantType.QInt8)
    return out


def ops(path: str) -> set:
    return {n.op_type for n in onnx.load(path).graph.node}


def ort_run(path: str, feeds: dict) -> list:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
