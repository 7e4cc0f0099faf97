"""Quantized models as onnxruntime's quantizer writes them (models/zoo/quantize.py), and
onnxruntime running them."""
from __future__ import annotations

import onnx
import onnxruntime as ort

from nnos_models.zoo.quantize import input_feed, quantized  # noqa: F401


def ops(path: str) -> set:
    return {n.op_type for n in onnx.load(path).graph.node}


def ort_run(path: str, feeds: dict) -> list:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
