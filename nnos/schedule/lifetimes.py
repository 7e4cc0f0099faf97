"""When each tensor is written and last read, and which tensors share one buffer.

Tensors share a buffer when one is a view of the other (Reshape, Flatten, Squeeze, Unsqueeze,
Identity: those steps then cost nothing) or when an elementwise step can write its output over
an input that dies at that step (in place). Graph inputs are never overwritten: a caller may
keep writing only the fields that changed.
"""
from __future__ import annotations

from ..ir import Graph, TensorType
from ..ops import OPS


class Groups:
    """Union-find over tensor names: the members of a group share one buffer."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def add(self, t: str):
        self.parent.setdefault(t, t)

    def find(self, t: str) -> str:
        while self.parent[t] != t:
            self.parent[t] = self.parent[self.parent[t]]
            t = self.parent[t]
        return t

    def union(self, a: str, b: str):
        self.parent[self.find(a)] = self.find(b)

    def members(self, t: str) -> list[str]:
        root = self.find(t)
        return [m for m in self.parent if self.find(m) == root]

    def roots(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for t in self.parent:
            out.setdefault(self.find(t), []).append(t)
        return out


def step_scratch(graph: Graph, node) -> list[list[tuple[TensorType, bool]]]:
    """Scratch of a step, as one list for its head op and one for each epilogue op."""
    in_types = [graph.type_of(i) if i else None for i in node.inputs]
    out_types = [graph.type_of(o) if o else None for o in node.outputs]
    op = OPS[node.op]
    parts = [list(op.scratch(node, in_types, out_types)) if op.scratch else []]
    for e in node.epilogue:
        eop = OPS[e.op]
        e_in = [graph.type_of(i) if i else None for i in e.inputs_with(node.outputs[0])]
        parts.append(list(eop.scratch(e.as_node(node.name), e_in, out_types[:1])) if eop.scratch else [])
    return parts


def lifetimes(graph: Graph) -> tuple[dict[str, int], dict[str, int]]:
    """(step that writes each tensor, -1 for inputs; last step that reads it, len(nodes) for outputs)."""
    define: dict[str, int] = {t: -1 for t in graph.inputs}
    last: dict[str, int] = {}
    for s, node in enumerate(graph.nodes):
        for i in node.all_inputs():
            if i and i not in graph.consts:
                last[i] = s
        for o in node.outputs:
            if o:
                define[o] = s
    for t in graph.outputs:
        last[t] = len(graph.nodes)
    return define, last


def alias_groups(graph: Graph, define: dict[str, int], last: dict[str, int]) -> tuple[Groups, list[int]]:
    """Which tensors share a buffer, and the view steps that therefore need not run."""
    groups = Groups()
    for t in define:
        groups.add(t)
    frozen = set(graph.inputs)

    def group_end(t):
        return max(last.get(m, define[m]) for m in groups.members(t))

    skip = []
    for s, node in enumerate(graph.nodes):
        op, out = OPS[node.op], node.outputs[0]
        if op.view and not node.epilogue and node.inputs[0] not in graph.consts:
            groups.union(out, node.inputs[0])
            skip.append(s)
            continue
        if not op.elementwise or len(node.outputs) != 1:
            continue
        reads = node.all_inputs()
        for i in node.inputs:
            if (i and i not in graph.consts and reads.count(i) == 1
                    and graph.type_of(i) == graph.type_of(out)
                    and not any(m in frozen for m in groups.members(i))
                    and group_end(i) == s):
                groups.union(out, i)
                break
    return groups, skip
