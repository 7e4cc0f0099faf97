"""Shape and dtype inference: every tensor gets a static TensorType, in one forward sweep.

Folding happens in the same sweep (a Reshape's shape may be computed by a Shape subgraph
that only folds once its input's type is known)."""
from __future__ import annotations

from ..errors import CompileError
from ..ir import SUPPORTED_DTYPES, Graph, Node, TensorType
from ..limits import tensor_problem
from ..ops import get
from ..ops.elementwise import ONNX_TYPE
from .fold import try_fold
from .quant import keep_weight, lower


def infer_node(graph: Graph, node) -> list[TensorType]:
    op = get(node)
    for i in node.inputs:
        if i and i not in graph.types and i not in graph.consts:
            raise node.fail(f"input {i!r} is not produced by any earlier node nor a graph input")
    in_types = [graph.type_of(i) if i else None for i in node.inputs]
    in_consts = [graph.consts.get(i) if i else None for i in node.inputs]
    for k in op.const_inputs:
        if k < len(node.inputs) and node.inputs[k] and node.inputs[k] not in graph.consts:
            raise node.fail(f"input {k} ({node.inputs[k]!r}) must be a constant known at compile "
                            "time; it depends on run-time values, which would make shapes dynamic")
    try:
        out = op.infer(node, in_types, in_consts)
    except CompileError:
        raise
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise node.fail(f"invalid attributes or inputs ({type(e).__name__}: {e})") from e
    for name, t in zip(node.outputs, out):
        if t.dtype not in SUPPORTED_DTYPES:
            raise node.fail(f"output {name!r} would have unsupported dtype {t.dtype}")
        problem = tensor_problem(t.shape, t.dtype.itemsize)
        if problem:
            raise node.fail(f"output {name!r}: {problem}")
    return out


def cast_code(node, target: TensorType) -> int:
    if target.dtype not in ONNX_TYPE:
        raise node.fail(f"CastLike to {target.dtype} is not supported")
    return ONNX_TYPE[target.dtype]


def infer_types(graph: Graph, keep_weights: bool = True) -> Graph:
    """Every tensor typed, constants folded as the sweep goes. ``keep_weights``: a product's
    8-bit weight stays DequantizeLinear(constant) for passes.quant to see (quant.keep_weight)."""
    g = graph.copy()
    consumers = g.consumers() if keep_weights else {}
    kept = []
    pending = list(reversed(g.nodes))
    while pending:
        node = pending.pop()
        if node.op == "CastLike" and len(node.inputs) == 2 and node.inputs[1] in g.types | g.consts:
            # the target's type is known here: from now on a Cast
            node = Node("Cast", node.name, node.inputs[:1], node.outputs, {"to": cast_code(node, g.type_of(node.inputs[1]))})
        lowered = lower(g, node)
        if lowered is not None:
            pending.extend(reversed(lowered))
            continue
        if not (keep_weights and keep_weight(g, node, consumers)) and try_fold(g, node):
            continue
        for name, t in zip(node.outputs, infer_node(g, node)):
            if name:
                g.types[name] = t
        kept.append(node)
    g.nodes = kept
    for o in g.outputs:
        if o not in g.types and o not in g.consts:
            raise CompileError(f"graph output {o!r} is not produced by any node")
    return g
