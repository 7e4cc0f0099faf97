"""nnos's graph IR: named tensors with static types, nodes in a DAG, constants held as numpy arrays.

Tensors are referred to by name. The empty name "" marks an omitted optional input.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import CompileError

# dtypes a plan may carry; anything else is refused at import with the tensor's name.
SUPPORTED_DTYPES = tuple(np.dtype(t) for t in (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool"))


def contiguous(a) -> np.ndarray:
    """C-contiguous array with the same shape. (np.ascontiguousarray turns 0-d into 1-d.)"""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")


ALIGN = 64      # bytes: a cache line, an AVX-512 vector


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on an ALIGN-byte boundary: a vector
    load of a weight never straddles two cache lines (numpy's own start 16 bytes into a line:
    every 64-byte load of a packed weight was two)."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + nbytes].view(dt).reshape(shape)


def aligned(a: np.ndarray) -> np.ndarray:
    """``a`` itself when it is C-contiguous and starts on an ALIGN-byte boundary, else such a copy."""
    if a.flags.c_contiguous and a.ctypes.data % ALIGN == 0:
        return a
    out = aligned_empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


@dataclass(frozen=True)
class TensorType:
    """A tensor's element type and static shape."""
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def to_json(self) -> dict:
        return {"dtype": self.dtype.name, "shape": list(self.shape)}

    @staticmethod
    def from_json(d: dict) -> "TensorType":
        return TensorType(np.dtype(d["dtype"]), tuple(int(s) for s in d["shape"]))

    def __str__(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"


@dataclass
class Epilogue:
    """An elementwise op applied in place to a fused node's output.

    ``operands`` are the op's other inputs in order; the chain value is inserted at ``pos``
    (e.g. Sub(c, x) has operands ["c"] and pos 1).
    """
    op: str
    attrs: dict = field(default_factory=dict)
    operands: list[str] = field(default_factory=list)
    pos: int = 0

    def as_node(self, name: str) -> "Node":
        return Node(self.op, name, [], [], self.attrs)

    def inputs_with(self, chain):
        ins = list(self.operands)
        ins.insert(self.pos, chain)
        return ins


@dataclass
class Node:
    """One op of the graph: its input and output tensor names, attributes and fused epilogue."""
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    epilogue: list[Epilogue] = field(default_factory=list)

    def all_inputs(self) -> list[str]:
        """Head inputs followed by epilogue operands: everything the step reads."""
        return self.inputs + [o for e in self.epilogue for o in e.operands if o]

    @property
    def label(self) -> str:
        ops = "+".join([self.op] + [e.op for e in self.epilogue])
        return f"{self.name} ({ops})"

    def fail(self, message: str) -> CompileError:
        return CompileError(message, node=self.name, op=self.op)


@dataclass
class Graph:
    """A model as typed tensors, constants and nodes in topological order."""
    name: str
    inputs: list[str]
    outputs: list[str]
    nodes: list[Node]
    types: dict[str, TensorType] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)

    def copy(self) -> "Graph":
        return Graph(self.name, list(self.inputs), list(self.outputs),
                     [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs),
                                          attrs=dict(n.attrs), epilogue=list(n.epilogue))
                      for n in self.nodes],
                     dict(self.types), dict(self.consts))

    def fresh(self, base: str) -> str:
        """A tensor name no constant or typed tensor has yet: ``base``, else ``base_1``, …"""
        name, i = base, 0
        while name in self.consts or name in self.types:
            i += 1
            name = f"{base}_{i}"
        return name

    def type_of(self, name: str) -> TensorType:
        if name in self.consts:
            c = self.consts[name]
            return TensorType(c.dtype, tuple(c.shape))
        return self.types[name]

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.all_inputs():
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            for op in [n.op] + [e.op for e in n.epilogue]:
                counts[op] = counts.get(op, 0) + 1
        return dict(sorted(counts.items()))
