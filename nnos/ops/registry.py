"""The operator registry: for each ONNX op, how to infer its output types, how to bind it
to preallocated buffers for the numpy executor, what scratch it needs and what it costs.

The numpy binding *is* nnos's definition of an op: every other backend must match it.
A binding receives its input arrays (arena views or constants), its output arrays and its
scratch arrays, and returns a *program*: a zero-argument callable, or a list of them (nested
lists allowed), that computes in place without allocating arrays. Bindings build their calls
with ``functools.partial`` over numpy functions wherever they can: calling a partial runs no
Python frame, which is most of the cost of a small op.

Inputs that are constants (weights) arrive read-only; a binding may precompute from those at
bind time (transposed or combined weights). Writable inputs change from call to call.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np

from ..ir import Node, TensorType, contiguous

Arr = Optional[np.ndarray]
InferFn = Callable[[Node, list, list], list]          # (node, in_types, in_consts) -> out_types
BindFn = Callable[[Node, list, list, list], Callable[[], None]]
ScratchFn = Callable[[Node, list, list], list]        # -> [(TensorType, persistent: bool)]
FlopsFn = Callable[[Node, list, list], int]


@dataclass(frozen=True)
class OpDef:
    """How one ONNX op is typed, bound to buffers, sized and costed."""
    name: str
    infer: InferFn
    bind: BindFn
    scratch: Optional[ScratchFn] = None
    flops: Optional[FlopsFn] = None
    const_inputs: tuple[int, ...] = ()   # inputs whose *values* must be known at compile time
    elementwise: bool = False            # output has the (broadcast) shape and dtype of its inputs; may run in place
    pointwise: bool = False              # each output element depends only on the inputs' elements at its
                                         # (broadcast) index: every elementwise op, and comparisons, Where, Cast
    view: bool = False                   # output is its first input's bytes under another shape


# The module of this package that registers each op, imported the first time one of its ops is
# looked up: a plan loads the modules of its own ops (a cart-pole's Gemm and Tanh: 2 of 12 on
# the way to its first tick), asking for all of them (iterating OPS) loads every one.
# tests/core/test_registry.py checks this table against what each module registers.
MODULES = {
    "activations": ("Cos", "Erf", "Gelu", "Mish", "Sin"),
    "conv": ("Conv", "ConvTranspose"),
    "einsum": ("Einsum",),
    "elementwise": ("Abs", "Add", "And", "Cast", "CastLike", "Ceil", "Clip", "Div", "Elu", "Equal", "Exp", "Floor",
                    "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "LeakyRelu", "Less", "LessOrEqual", "Log",
                    "Max", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "Reciprocal", "Relu", "Round", "Sigmoid",
                    "Softplus", "Sqrt", "Sub", "Tanh", "Where", "Xor"),
    "linalg": ("Gemm", "MatMul"),
    "lookup": ("nnos.Lookup",),
    "norm": ("BatchNormalization", "LayerNormalization", "LogSoftmax", "RMSNormalization", "Softmax"),
    "pool": ("AveragePool", "GlobalAveragePool", "MaxPool"),
    "quant": ("ConvInteger", "DequantizeLinear", "MatMulInteger", "QuantizeLinear", "nnos.QuantizeDequantize"),
    "reduce": ("ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum"),
    "rnn": ("GRU", "LSTM"),
    "scan": ("CumSum", "Trilu"),
    "shape": ("Concat", "Constant", "ConstantOfShape", "Expand", "Flatten", "Gather", "Identity", "Pad", "Range",
              "Reshape", "Shape", "Slice", "Split", "Squeeze", "Transpose", "Unsqueeze"),
}


class Registry:
    """Op name → OpDef, its module imported when one of its ops is first asked for (MODULES)."""

    def __init__(self, modules: dict[str, tuple[str, ...]]):
        self.defs: dict[str, OpDef] = {}
        self.where = {op: module for module, ops in modules.items() for op in ops}
        self.complete = False

    def __setitem__(self, name: str, op: OpDef) -> None:
        self.defs[name] = op

    def _load(self, name) -> dict[str, OpDef]:
        if name not in self.defs and name in self.where:
            importlib.import_module(f"{__package__}.{self.where[name]}")
        return self.defs

    def _all(self) -> dict[str, OpDef]:
        if not self.complete:
            for module in sorted(set(self.where.values())):
                importlib.import_module(f"{__package__}.{module}")
            self.complete = True
        return self.defs

    def __getitem__(self, name: str) -> OpDef:
        return self._load(name)[name]

    def __contains__(self, name) -> bool:
        return name in self._load(name)

    def get(self, name: str, default=None):
        return self._load(name).get(name, default)

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def items(self):
        return self._all().items()


OPS = Registry(MODULES)


def register(name: str, infer: InferFn, bind: BindFn, **kw) -> OpDef:
    if kw.get("elementwise"):
        kw.setdefault("pointwise", True)
    op = OpDef(name, infer, bind, **kw)
    OPS[name] = op
    return op


def get(node: Node) -> OpDef:
    op = OPS.get(node.op)
    if op is None:
        raise node.fail(f"unsupported op {node.op!r}; nnos supports: {', '.join(sorted(OPS))}")
    return op


def scalar(value, dtype) -> np.ndarray:
    """A 0-d array: passing it to a ufunc converts nothing and allocates nothing per call."""
    return np.array(value, dtype=dtype)


call = partial   # call(f, *args, **kw): f bound to its arrays, run later with no Python frame


def flatten(program) -> tuple:
    """A program (callable, None, or nested lists of them) as one flat tuple of callables."""
    if program is None:
        return ()
    if callable(program):
        return (program,)
    return tuple(f for p in program for f in flatten(p))


def _frozen(a):
    if a is None:
        return None
    v = contiguous(a).view()
    v.flags.writeable = False
    return v


def is_const(a) -> bool:
    """A constant input: read-only, so its values at bind time are its values forever."""
    return a is not None and not a.flags.writeable


def full_shape(a: np.ndarray, shape: tuple, scratch=None):
    """``a`` as an array of exactly ``shape``, so a ufunc never takes numpy's broadcasting path
    (which allocates iterator buffers on every call). A constant is expanded once, here; a
    run-time operand needs a ``scratch`` of ``shape``: returns (array, copy step or None)."""
    if a.shape == tuple(shape):
        return a, None
    if a.size == int(np.prod(shape)) and a.flags.c_contiguous:
        return a.reshape(shape), None
    if is_const(a):
        full = np.array(np.broadcast_to(a, shape))
        full.flags.writeable = False
        return full, None
    if scratch is None:
        raise ValueError(f"a run-time operand of shape {a.shape} broadcast to {shape} needs scratch")
    return scratch, call(np.copyto, scratch, a)


def broadcast_scratch(in_types, out_type) -> list:
    """One transient scratch of the output's shape per input that must be broadcast."""
    return [(out_type, False) for t in in_types if t is not None and t.shape != out_type.shape
            and t.size != out_type.size]


def evaluate(node: Node, inputs: list) -> list[np.ndarray]:
    """Run one node on concrete arrays, allocating its outputs: constant folding and the
    direct (unplanned) reference use this. Same binding as the executor, so one definition."""
    op = get(node)
    in_types = [TensorType(a.dtype, tuple(a.shape)) if a is not None else None for a in inputs]
    out_types = op.infer(node, in_types, inputs)
    outs = [np.empty(t.shape, t.dtype) for t in out_types]
    scratch = [np.zeros(t.shape, t.dtype) for t, _ in (op.scratch(node, in_types, out_types) if op.scratch else [])]
    ins = [_frozen(a) for a in inputs]      # everything is a constant here
    program = flatten(op.bind(node, ins, outs, scratch))
    with np.errstate(all="ignore"):
        for f in program:
            f()
    return outs
