"""Inputs to try a plan with, and the unplanned reference it is checked against: used by the
compiler's self-check, the backends' verification, the intake and the benchmarks."""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ops import evaluate


def sample_inputs(plan_or_graph, seed: int = 0) -> dict[str, np.ndarray]:
    g = plan_or_graph.graph if hasattr(plan_or_graph, "graph") else plan_or_graph
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        t = g.type_of(name)
        if t.dtype.kind == "f":
            feeds[name] = rng.standard_normal(t.shape).astype(t.dtype)
        elif t.dtype.kind == "b":
            feeds[name] = rng.random(t.shape) < 0.5
        else:
            feeds[name] = np.zeros(t.shape, t.dtype)   # indices: zero is always in range
    return feeds


def run_direct(graph: Graph, feeds: dict) -> dict:
    """The unplanned reference: evaluate node by node, allocating as it goes."""
    values = dict(graph.consts)
    values.update(feeds)
    for node in graph.nodes:
        outs = evaluate(node, [values[i] if i else None for i in node.inputs])
        values.update((o, v) for o, v in zip(node.outputs, outs) if o)
    return {o: values[o] for o in graph.outputs}
