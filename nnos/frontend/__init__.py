"""Frontends turn a model file into nnos's graph IR (``nnos.ir.Graph``)."""
from .onnx_import import import_onnx  # noqa: F401
