"""Float16 models on processors without float16 arithmetic: where they are held and computed.

``compute_in_float32(graph)`` (the default for a model with float16 tensors): every float16
weight becomes float32 and every float16 activation is computed and held in float32; float16
stays where the model says a value is float16 to the outside — its inputs and outputs (a Cast
at each) — and where it rounds on purpose: a Cast to float16 inside is kept as a rounding (to
float16 and straight back), so mixed-precision graphs keep their numerics. The kernels are then
the float32 ones (vectorized, fused); the plan differs from the model's own float16 evaluation
by float16 roundings only (verify.TOLERANCE says how much is allowed).

``upcast(graph)`` (``nnos compile --precision fp32``): the same, and the inputs and outputs are
float32 too (no Cast at the edges): for callers that feed and read float32.

Both run on a typed graph and return an untyped one (types are inferred again).
"""
from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..ir import Graph, Node, TensorType

FLOAT16, FLOAT = 10, 1            # ONNX's TensorProto codes, as Cast's "to" holds them
HALF = np.dtype(np.float16)
PRECISIONS = ("model", "fp32-compute", "fp32")


def has_float16(graph: Graph) -> bool:
    return any(t.dtype == HALF for t in graph.types.values()) or any(c.dtype == HALF for c in graph.consts.values())


def _widen_attrs(node: Node) -> dict:
    """Attributes that make float16 values (ConstantOfShape's fill, Constant's value) widened."""
    attrs = dict(node.attrs)
    for key in ("value",):
        v = attrs.get(key)
        if isinstance(v, np.ndarray) and v.dtype == HALF:
            attrs[key] = v.astype(np.float32)
    if node.op in ("EyeLike", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike") \
            and int(attrs.get("dtype", FLOAT)) == FLOAT16:
        attrs["dtype"] = FLOAT
    return attrs


def _rewrite(graph: Graph, edges: bool) -> Graph:
    g = Graph(graph.name, list(graph.inputs), list(graph.outputs), [], {}, {})
    for name, c in graph.consts.items():
        g.consts[name] = c.astype(np.float32) if c.dtype == HALF else c
    rename: dict[str, str] = {}
    for name in graph.inputs:
        t = graph.types[name]
        if t.dtype != HALF:
            g.types[name] = t
        elif edges:
            g.types[name] = t
            rename[name] = f"{name}@f32"
            g.nodes.append(Node("Cast", f"{name}@widen", [name], [rename[name]], {"to": FLOAT}))
        else:
            g.types[name] = TensorType(np.dtype(np.float32), t.shape)
    halves = {o for o in graph.outputs if graph.type_of(o).dtype == HALF and o not in graph.inputs} if edges else set()
    for o in halves & set(graph.consts):             # a constant output stays as the model has it
        g.consts[o] = graph.consts[o]
    halves -= set(graph.consts)
    for node in graph.nodes:
        ins = [rename.get(i, i) for i in node.inputs]
        outs = [f"{o}@f32" if o in halves else o for o in node.outputs]
        if node.op == "Cast" and int(node.attrs["to"]) == FLOAT16:     # a rounding the model asked for
            mid = f"{node.outputs[0]}@f16"
            g.nodes.append(Node("Cast", node.name, ins[:1], [mid], {"to": FLOAT16}))
            g.nodes.append(Node("Cast", f"{node.name}@widen", [mid], outs, {"to": FLOAT}))
        else:
            if node.epilogue:
                raise CompileError(f"node {node.name}: the precision pass runs before fusion")
            g.nodes.append(Node(node.op, node.name, ins, outs, _widen_attrs(node)))
    for o in sorted(halves):
        g.nodes.append(Node("Cast", f"{o}@narrow", [f"{o}@f32"], [o], {"to": FLOAT16}))
    return g


def compute_in_float32(graph: Graph) -> Graph:
    return _rewrite(graph, edges=True)


def upcast(graph: Graph) -> Graph:
    return _rewrite(graph, edges=False)


def apply_precision(graph: Graph, precision: str) -> Graph:
    """``precision``: "model" (as the model says), "fp32-compute" (the default), "fp32"."""
    if precision not in PRECISIONS:
        raise CompileError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "model" or not has_float16(graph):
        return graph
    return compute_in_float32(graph) if precision == "fp32-compute" else upcast(graph)
