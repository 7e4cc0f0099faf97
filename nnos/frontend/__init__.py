"""Frontends turn a model file into nnos's graph IR (``nnos.ir.Graph``).

``import_onnx`` is imported when first asked for: the loop imports ``frontend.image`` (crop
boxes for a camera's pre-processing) and must not pay for onnx's import on the way to its first
tick (2 s of a boot under emulation)."""
from __future__ import annotations


def __getattr__(name: str):
    if name == "import_onnx":
        from .onnx_import import import_onnx
        return import_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
