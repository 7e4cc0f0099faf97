"""Constant folding: a node whose inputs are all constants (or a Shape of a tensor whose type
is known) is evaluated at compile time and replaced by its outputs as constants. This is what
removes torch's Shape → Gather → Concat → Reshape subgraphs."""
from __future__ import annotations


from ..errors import CompileError
from ..ir import Graph, Node, contiguous
from ..limits import tensor_problem
from ..ops import evaluate, get
from ..ops.shape import _shape_value

MAX_FOLDED_BYTES = 64 << 20   # larger results stay as steps rather than bloat the plan


def try_fold(graph: Graph, node: Node) -> bool:
    """Fold ``node`` into constants if it can be; returns whether it was."""
    if node.epilogue:
        return False
    if node.op == "Shape":
        src = node.inputs[0]
        if src in graph.types or src in graph.consts:
            graph.consts[node.outputs[0]] = _shape_value(node, graph.type_of(src))
            return True
        return False
    present = [i for i in node.inputs if i]
    if not all(i in graph.consts for i in present):
        return False
    op = get(node)  # unsupported ops fail here with the node's name
    arrays = [graph.consts[i] if i else None for i in node.inputs]
    _check_result_size(graph, node, op, arrays)
    try:
        values = evaluate(node, arrays)
    except CompileError:
        raise
    except Exception as e:
        raise node.fail(f"evaluating on constant inputs failed: {type(e).__name__}: {e}") from e
    if sum(v.nbytes for v in values) > MAX_FOLDED_BYTES:
        return False
    for name, v in zip(node.outputs, values):
        if name:
            graph.consts[name] = contiguous(v)
    return True


def _check_result_size(graph: Graph, node: Node, op, arrays) -> None:
    """What folding would allocate is checked before it is: a constant Expand to 2^40 elements
    is a refusal naming the node, never a MemoryError."""
    try:
        types = op.infer(node, [graph.type_of(i) if i else None for i in node.inputs], arrays)
    except Exception:               # noqa: BLE001 - inference reports its own errors later, in its sweep
        return
    for name, t in zip(node.outputs, types):
        problem = tensor_problem(t.shape, t.dtype.itemsize)
        if problem:
            raise node.fail(f"output {name!r}: {problem}")


def fold_constants(graph: Graph) -> Graph:
    """Fold every foldable node, in order. Needs types only for Shape's inputs."""
    g = graph.copy()
    kept = []
    for node in g.nodes:
        if not try_fold(g, node):
            kept.append(node)
    g.nodes = kept
    return g
