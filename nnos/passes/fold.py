"""Constant folding: a node whose inputs are all constants (or a Shape of a tensor whose type
is known) is evaluated at compile time and replaced by its outputs as constants. This is what
removes torch's Shape → Gather → Concat → Reshape subgraphs, and exported position embeddings
and masks (Range, CumSum, Trilu, Sin/Cos over constants): an op nnos does not run is evaluated
once by onnx's reference implementation when all its inputs are constants."""
from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..ir import Graph, Node, contiguous
from ..limits import tensor_problem
from ..ops import OPS, evaluate, get
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
    arrays = [graph.consts[i] if i else None for i in node.inputs]
    if node.op not in OPS:
        return _fold_by_reference(graph, node, arrays)
    op = get(node)
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


def _fold_by_reference(graph: Graph, node: Node, arrays) -> bool:
    """An op nnos does not run, on constant inputs: onnx.reference evaluates it, once."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    ins = [f"in{k}" if a is not None else "" for k, a in enumerate(arrays)]
    attrs = {k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v for k, v in node.attrs.items()}
    try:
        proto = helper.make_node(node.op, ins, [f"out{k}" for k in range(len(node.outputs))], **attrs)
        values = ReferenceEvaluator(proto).run(None, {n: a for n, a in zip(ins, arrays) if n})
    except MemoryError as e:
        raise node.fail("folding it on its constant inputs would not fit in memory") from e
    except Exception as e:                               # noqa: BLE001 - the reference's own refusal, said as ours
        raise node.fail(f"op {node.op} is not one nnos runs, and onnx's reference could not evaluate it on its "
                        f"constant inputs: {type(e).__name__}: {e}") from e
    if sum(np.asarray(v).nbytes for v in values) > MAX_FOLDED_BYTES:
        raise node.fail(f"folding it on its constant inputs makes more than {MAX_FOLDED_BYTES >> 20} MiB of constants, "
                        f"and op {node.op} is not one nnos runs as a step")
    for name, v in zip(node.outputs, values):
        if name:
            graph.consts[name] = contiguous(np.asarray(v))
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
