"""Op patterns exporters spell out that are one op to nnos.

GELU: torch's exporters before opset 20 write 0.5·x·(1 + erf(x/√2)) as five nodes (Div or Mul
by a constant, Erf, Add 1, Mul x, Mul 0.5, in one of three orders); it becomes one Gelu, which
the cpu backend applies in registers as the epilogue of the product before it.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import Graph, Node


def _const(g: Graph, name: str, want: float) -> bool:
    c = g.consts.get(name)
    return c is not None and c.size == 1 and c.dtype.kind == "f" and abs(float(c.reshape(())) - want) <= 1e-3 * abs(want)


def _other(node: Node, name: str) -> str | None:
    """The other input of a two-input node that reads ``name`` once."""
    if len(node.inputs) != 2 or node.inputs.count(name) != 1:
        return None
    return node.inputs[1 - node.inputs.index(name)]


def _sole(consumers, g: Graph, name: str, op: str) -> Node | None:
    users = consumers.get(name, [])
    if len(users) == 1 and users[0].op == op and name not in g.outputs:
        return users[0]
    return None


def _scaled_input(g: Graph, producers, name: str) -> str | None:
    """x where ``name`` = x / √2 or x · (1/√2)."""
    p = producers.get(name)
    if p is None or p.op not in ("Div", "Mul") or len(p.inputs) != 2:
        return None
    if p.op == "Div" and _const(g, p.inputs[1], math.sqrt(2)):
        return p.inputs[0]
    if p.op == "Mul":
        for a, b in (p.inputs, p.inputs[::-1]):
            if _const(g, b, math.sqrt(0.5)):
                return a
    return None


def _gelu_at(g: Graph, erf: Node, producers, consumers) -> tuple[str, str, list[Node]] | None:
    """(x, output, the nodes it replaces) for the GELU around ``erf``, or None."""
    x = _scaled_input(g, producers, erf.inputs[0])
    scale = producers.get(erf.inputs[0])
    if x is None or len(consumers.get(erf.inputs[0], [])) != 1:
        return None
    add = _sole(consumers, g, erf.outputs[0], "Add")
    if add is None or not _const(g, _other(add, erf.outputs[0]) or "", 1.0):
        return None
    mul = _sole(consumers, g, add.outputs[0], "Mul")
    if mul is None:
        return None
    other = _other(mul, add.outputs[0])
    if other == x:                                     # (x · A) · 0.5
        last = _sole(consumers, g, mul.outputs[0], "Mul")
        if last is None or not _const(g, _other(last, mul.outputs[0]) or "", 0.5):
            return None
        return x, last.outputs[0], [scale, erf, add, mul, last]
    half = producers.get(other or "")
    if half is not None and half.op == "Mul" and len(consumers.get(other, [])) == 1 and x in half.inputs \
            and _const(g, _other(half, x) or "", 0.5):  # (x · 0.5) · A
        return x, mul.outputs[0], [scale, erf, add, half, mul]
    if _const(g, other or "", 0.5):                    # A · 0.5, then · x
        last = _sole(consumers, g, mul.outputs[0], "Mul")
        if last is not None and _other(last, mul.outputs[0]) == x:
            return x, last.outputs[0], [scale, erf, add, mul, last]
    return None


def fuse_gelu(graph: Graph) -> Graph:
    g = graph.copy()
    for erf in [n for n in g.nodes if n.op == "Erf"]:
        if not any(n is erf for n in g.nodes) or g.type_of(erf.inputs[0]).dtype not in (np.float32, np.float64):
            continue
        found = _gelu_at(g, erf, g.producers(), g.consumers())
        if found is None:
            continue
        x, out, gone = found
        ids = {id(n) for n in gone}
        at = min(i for i, n in enumerate(g.nodes) if id(n) in ids)
        kept = [n for n in g.nodes if id(n) not in ids]
        kept.insert(at, Node("Gelu", f"{erf.name}@gelu", [x], [out], {"approximate": "none"}))
        g.nodes = kept
    return g
