"""Operator definitions. Each op module registers its ops in ``registry.OPS`` when imported;
``OPS`` imports an op's module the first time the op is looked up (``registry.MODULES``)."""
from .registry import MODULES, OPS, OpDef, evaluate, get  # noqa: F401
