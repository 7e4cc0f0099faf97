"""Plan: what the compiler produces and the device runs.

A Plan holds the optimized, scheduled graph with its weights, the memory plan and metadata.
``plan(feeds)`` runs it on the numpy backend; ``plan.bind(backend)`` gives the Executable the
supervisor calls every tick.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..errors import BackendError, PlanCallError, PlanFormatError
from ..fsutil import atomic_write
from ..ir import Epilogue, Graph, Node, TensorType
from ..limits import arena_problem, tensor_problem
from ..ops import OPS
from ..schedule.memory import MemoryPlan
from . import artifact


@dataclass(frozen=True)
class TensorSpec:
    """A plan input's or output's name, shape and dtype."""
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def type(self) -> TensorType:
        return TensorType(self.dtype, self.shape)


_backends = {"prepare": None}     # filled by nnos.backends when it is imported (see use_backends)


def use_backends(prepare) -> None:
    """nnos.backends hands its prepare(plan, name) to the plan layer when it is imported, so
    a Plan binds itself without the plan layer importing the layer above it."""
    _backends["prepare"] = prepare


class Plan:
    def __init__(self, graph: Graph, memory: MemoryPlan, meta: dict):
        self.graph, self.memory, self.meta = graph, memory, meta
        self._exe = None
        self.compile_seconds: float | None = None      # set by compile(); not part of the file
        # code a backend generated from this plan, kept with it (backend → source sha256 →
        # binary: the vulkan backend's SPIR-V, so a device needs no shader compiler). Only ever
        # filled by nnos itself: the control plane drops it from an uploaded plan.
        self.kernels: dict[str, dict[str, bytes]] = {}
        self.digest: str | None = None                 # read from a file: its sha256 (the file's own last 32 bytes)

    # --- signature ------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self.graph.inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self.graph.outputs]

    def _spec(self, name):
        t = self.graph.type_of(name)
        return TensorSpec(name, t.shape, t.dtype)

    # --- running --------------------------------------------------------------------------
    def bind(self, backend: str = "numpy"):
        if _backends["prepare"] is None:
            raise BackendError("no backends are loaded: import nnos.backends (nnos.compile and nnos.load do)")
        return _backends["prepare"](self, backend)

    def __call__(self, feeds: dict) -> dict:
        """Run once. The returned arrays are read-only views owned by the plan, valid until
        the next call: copy them to keep them."""
        exe = self._exe
        if exe is None:
            exe = self._exe = self.bind("numpy")
        dst = exe.inputs
        if len(feeds) != len(dst) or any(k not in dst for k in feeds):
            raise PlanCallError(f"expected inputs {sorted(dst)}, got {sorted(feeds)}")
        for name, value in feeds.items():
            buf = dst[name]
            if not isinstance(value, np.ndarray) or value.dtype != buf.dtype or value.shape != buf.shape:
                got = (f"{value.dtype.name}{list(value.shape)}" if isinstance(value, np.ndarray)
                       else type(value).__name__)
                raise PlanCallError(f"input {name!r}: expected {buf.dtype.name}{list(buf.shape)}, got {got}")
            np.copyto(buf, value)
        exe.run()
        return dict(exe.outputs)

    # --- persistence ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        g = self.graph
        header = {
            "nnos_version": __version__,
            "meta": self.meta,
            "graph": {
                "name": g.name, "inputs": g.inputs, "outputs": g.outputs,
                "types": {k: v.to_json() for k, v in g.types.items()},
                "nodes": [{"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
                           "attrs": n.attrs,
                           "epilogue": [{"op": e.op, "attrs": e.attrs, "operands": e.operands, "pos": e.pos}
                                        for e in n.epilogue]} for n in g.nodes],
            },
            "memory": self.memory.to_json(),
        }
        if self.kernels:
            header["kernels"] = {b: {h: np.frombuffer(code, np.uint8) for h, code in sorted(k.items())}
                                 for b, k in sorted(self.kernels.items())}
        return artifact.write(header, g.consts)

    def save(self, path: str) -> None:
        """Write atomically: temp file in the same directory, fsync, rename."""
        atomic_write(path, self.to_bytes())

    @staticmethod
    def from_bytes(data: bytes) -> "Plan":
        header, weights = artifact.read(data)
        try:
            plan = _from_header(header, weights)
            plan.digest = bytes(data[-artifact.DIGEST_BYTES:]).hex()
            return plan
        except PlanFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as e:
            raise PlanFormatError(f"plan header is malformed: {type(e).__name__}: {e}") from e


def _from_header(header: dict, weights: dict) -> Plan:
    kernels = _kernels(header.get("kernels", {}))
    gj = header["graph"]
    nodes = []
    for n in gj["nodes"]:
        if n["op"] not in OPS:
            raise PlanFormatError(f"plan uses op {n['op']!r}, which this nnos does not implement")
        epi = [Epilogue(e["op"], e["attrs"], list(e["operands"]), int(e["pos"])) for e in n["epilogue"]]
        for e in epi:
            if e.op not in OPS or not OPS[e.op].elementwise:
                raise PlanFormatError(f"plan fuses op {e.op!r}, which is not an elementwise op here")
        nodes.append(Node(n["op"], n["name"], list(n["inputs"]), list(n["outputs"]), n["attrs"], epi))
    types = {k: TensorType.from_json(v) for k, v in gj["types"].items()}
    for name, t in types.items():
        problem = tensor_problem(t.shape, t.dtype.itemsize)
        if problem:
            raise PlanFormatError(f"tensor {name!r}: {problem}")
    graph = Graph(gj["name"], list(gj["inputs"]), list(gj["outputs"]), nodes, types, weights)
    memory = MemoryPlan.from_json(header["memory"])
    arena = memory.arena_bytes
    problem = arena_problem(arena)
    if problem:
        raise PlanFormatError(problem)
    for name, off in memory.tensors.items():
        if name not in types or off < 0 or off + types[name].nbytes > arena:
            raise PlanFormatError(f"tensor {name!r} lies outside the {arena}-byte arena")
    for name in list(graph.inputs) + list(graph.outputs) + [i for n in nodes for i in n.all_inputs() + n.outputs]:
        if name and name not in weights and name not in memory.tensors:
            raise PlanFormatError(f"tensor {name!r} has neither a weight nor an arena slot")
    if len(memory.scratch) != len(nodes):
        raise PlanFormatError("memory plan and schedule differ in length")
    plan = Plan(graph, memory, header["meta"])
    plan.kernels = kernels
    return plan


def _kernels(section) -> dict[str, dict[str, bytes]]:
    """The generated-code section: backend → {source sha256 (64 hex digits) → bytes}."""
    if not isinstance(section, dict):
        raise PlanFormatError(f"plan 'kernels' must be an object, got {type(section).__name__}")
    out = {}
    for backend, table in section.items():
        if not isinstance(table, dict):
            raise PlanFormatError(f"plan kernels of {backend!r} must be an object (source hash → code)")
        out[backend] = {}
        for key, code in table.items():
            if (len(key) != 64 or key.strip("0123456789abcdef") or not isinstance(code, np.ndarray)
                    or code.dtype != np.uint8 or code.ndim != 1):
                raise PlanFormatError(f"plan kernel {backend}/{str(key)[:70]!r}: expected a sha256 key and a "
                                      f"uint8 array, got {type(code).__name__}")
            out[backend][key] = code.tobytes()
    return out


def load(path: str) -> Plan:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PlanFormatError(f"{path}: cannot read plan: {e.strerror}") from e
    try:
        return Plan.from_bytes(data)
    except PlanFormatError as e:
        raise PlanFormatError(f"{path}: {e}") from e
