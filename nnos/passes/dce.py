"""Dead-node elimination: drop nodes whose outputs nothing reads, and unused constants/types."""
from __future__ import annotations

from ..ir import Graph


def eliminate_dead(graph: Graph) -> Graph:
    g = graph.copy()
    needed = set(g.outputs)
    kept = []
    for node in reversed(g.nodes):
        if any(o in needed for o in node.outputs if o):
            kept.append(node)
            needed.update(i for i in node.all_inputs() if i)
    g.nodes = kept[::-1]
    g.consts = {k: v for k, v in g.consts.items() if k in needed}
    live = needed | set(g.inputs) | {o for n in g.nodes for o in n.outputs}
    g.types = {k: v for k, v in g.types.items() if k in live}
    return g
