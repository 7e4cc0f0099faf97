"""Operator definitions. Importing this package registers every op in ``registry.OPS``."""
from . import activations, conv, einsum, elementwise, linalg, norm, pool, quant, reduce, rnn, scan, shape  # noqa: F401
from .registry import OPS, OpDef, evaluate, get  # noqa: F401
