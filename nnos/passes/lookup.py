"""Elementwise functions of one 8-bit grid's values, as tables.

In a QDQ model, a chain of elementwise ops often reads one tensor whose values are on a
quantization grid — a DequantizeLinear's output, or a rounding's — and constants: torch's GELU
between roundings is Div, Erf, Add, Mul (by the same tensor) and Mul, each rounded again. Its
output is then a function of one of at most 256 values. ``tabulate`` evaluates that function
through the reference on every value of the grid, once, at compile time, and puts an
``nnos.Lookup`` (ops/lookup.py) in its place: the chain's outputs bitwise what the reference
computes, at the cost of one rounding and one table read a value (TFLite's int8 activations
are such tables too).

A chain is tabulated when its ops read nothing but the grid's tensor, chain values and one-element
constants, only its last output is read outside it, and it costs more than the lookup (a Relu
alone does not).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, contiguous
from ..ops import OPS, evaluate
from ..ops.lookup import LOOKUP
from ..ops.quant import FAKE_QUANT, QUANT
from .qdq import carry, grid_of

F32 = np.dtype(np.float32)
# rough vector operations a value, by op (others: 1); a lookup is about 6
COST = {"Erf": 24, "Gelu": 28, "Tanh": 18, "Sigmoid": 20, "Exp": 16, "Log": 16, "Softplus": 30, "Mish": 40,
        "Pow": 30, "Elu": 18, "Sin": 20, "Cos": 20, "Div": 4, "Sqrt": 4, "Reciprocal": 4, FAKE_QUANT: 6}
WORTH = 12


def on_grid(g: Graph) -> dict[str, tuple]:
    """Each float32 tensor whose values are on one per-tensor grid → (scale, zero point): made by
    a DequantizeLinear or a rounding, or moved from such a tensor (Reshape, Transpose, ...)."""
    on: dict[str, tuple] = {}
    for node in g.nodes:
        carry(on, node, grid_of(g, node))
    return on


def _joins(g: Graph, node: Node, inside: set) -> bool:
    op = OPS.get(node.op)
    if op is None or not op.elementwise or node.epilogue or len(node.outputs) != 1:
        return False
    if g.type_of(node.outputs[0]).dtype != F32 or not any(i in inside for i in node.inputs):
        return False
    return all(not i or i in inside or (i in g.consts and g.consts[i].size == 1) for i in node.inputs)


def _region(g: Graph, t: str, start: int, claimed: set) -> list[Node]:
    """The elementwise nodes after position ``start`` that read only ``t``, each other's outputs
    and one-element constants (in graph order)."""
    inside, region = {t}, []
    for node in g.nodes[start:]:
        if id(node) not in claimed and _joins(g, node, inside):
            region.append(node)
            inside.add(node.outputs[0])
    return region


def _closed(g: Graph, region: list[Node], consumers) -> tuple[list[Node], str] | None:
    """A part of ``region`` that ends in one tensor and whose other outputs only it reads — the
    nodes that tensor needs, ending at the region's last node that has such a part: (its nodes,
    that tensor)."""
    for end in reversed(region):
        part, need = [], {end.outputs[0]}
        for node in reversed(region):
            if node.outputs[0] in need:
                part.insert(0, node)
                need.update(node.inputs)
        ids = {id(n) for n in part}
        inner = [n.outputs[0] for n in part if n is not end]
        if all(o not in g.outputs and all(id(c) in ids for c in consumers.get(o, [])) for o in inner):
            return part, end.outputs[0]
    return None


def _table(g: Graph, t: str, grid: tuple, part: list[Node], out: str) -> tuple[np.ndarray, int] | None:
    """The part's output for each value of the grid, by the reference, and the grid's first index."""
    scale, zp = (np.asarray(a).reshape(()) for a in grid)
    qmin, qmax = QUANT[zp.dtype]
    lo, hi = qmin - int(zp), qmax - int(zp)
    values = {t: np.arange(lo, hi + 1).astype(F32) * scale.astype(F32)}     # DequantizeLinear's values
    try:
        for node in part:
            arrays = [values[i] if i in values else (g.consts[i] if i else None) for i in node.inputs]
            values[node.outputs[0]] = evaluate(node, arrays)[0]
    except Exception:                    # noqa: BLE001 - an op that will not evaluate here stays a step
        return None
    table = values[out]
    if table.dtype != F32 or table.size != hi - lo + 1:
        return None
    return contiguous(table.reshape(-1)), lo


def tabulate(graph: Graph) -> Graph:
    """Each chain of ``_closed`` on a grid that costs more than a lookup, as one nnos.Lookup."""
    g = graph.copy()
    on, consumers = on_grid(g), g.consumers()
    position = {name: k for k, node in enumerate(g.nodes) for name in node.outputs}
    claimed: set = set()
    put: dict[int, Node] = {}
    for t, grid in on.items():
        if g.type_of(t).dtype != F32 or grid[0].dtype != F32:
            continue
        region = _region(g, t, position.get(t, -1) + 1, claimed)
        while region:                          # each closed part: a GELU, and an Erf beside it
            found = _closed(g, region, consumers)
            if found is None:
                break
            part, out = found
            taken = {id(n) for n in part}
            region = [n for n in region if id(n) not in taken]
            made = _table(g, t, grid, part, out) if sum(COST.get(n.op, 1) for n in part) >= WORTH else None
            if made is None:
                continue
            table, lo = made
            s, tab = g.fresh(f"{out}/lookup_scale"), g.fresh(f"{out}/lookup_table")
            g.consts[s] = contiguous(np.asarray(grid[0], F32).reshape(()))
            g.consts[tab] = table
            claimed.update(id(n) for n in part)
            put[id(part[-1])] = Node(LOOKUP, part[-1].name, [t, s, tab], [out], {"lo": lo})
    g.nodes = [put.get(id(n), n) for n in g.nodes if id(n) not in claimed or id(n) in put]
    return g
