"""A deterministic topological order: Kahn's algorithm, ties broken by the original position."""
from __future__ import annotations

from ..errors import CompileError
from ..ir import Graph


def schedule(graph: Graph) -> Graph:
    import heapq                   # here: a plan's loading imports this module, never runs it
    g = graph.copy()
    producer = {o: i for i, n in enumerate(g.nodes) for o in n.outputs if o}
    deps = [{producer[i] for i in n.all_inputs() if i in producer} for n in g.nodes]
    users: list[list[int]] = [[] for _ in g.nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    pending = [len(d) for d in deps]
    ready = [i for i, p in enumerate(pending) if p == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(g.nodes):
        stuck = [g.nodes[i].name for i, p in enumerate(pending) if p]
        raise CompileError(f"the graph has a cycle through nodes {stuck[:5]}")
    g.nodes = [g.nodes[i] for i in order]
    return g
