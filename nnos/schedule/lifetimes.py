"""From a scheduled graph to buffers and their lifetimes, then to the arena layout.

Tensors share a buffer when one is a view of the other (Reshape, Flatten, Squeeze, Unsqueeze,
Identity: those steps then cost nothing) or when an elementwise step can write its output over
an input that dies at that step (in place). Graph inputs are never overwritten: a caller may
keep writing only the fields that changed. Scratch arrays live for their step only;
persistent scratch (zero borders kept across calls) lives outside the arena.
"""
from __future__ import annotations

from ..ir import Graph, TensorType
from ..ops import OPS
from .memory import Buffer, place_buffers


class _Groups:
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


def memory_plan(graph: Graph) -> dict:
    n = len(graph.nodes)
    groups = _Groups()
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
        last[t] = n
    for t in define:
        groups.add(t)
    frozen = set(graph.inputs)

    def group_end(t):
        return max(last.get(m, define[m]) for m in groups.members(t))

    skip = []
    for s, node in enumerate(graph.nodes):
        op = OPS[node.op]
        out = node.outputs[0]
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

    # A batch-1 Gemm in bias_row form reads one element past its input: that element holds 1.0
    # for the whole run, so the input's buffer is one element longer and never shared.
    ones_roots = {groups.find(n.inputs[0]) for n in graph.nodes if n.op == "Gemm" and n.attrs.get("bias_row")}
    roots: dict[str, list[str]] = {}
    for t in define:
        roots.setdefault(groups.find(t), []).append(t)
    buffers, owners = [], []
    for root, members in roots.items():
        size = max(graph.type_of(m).nbytes for m in members)
        start = min(define[m] for m in members)
        end = max(last.get(m, define[m]) for m in members)
        if root in ones_roots:
            size, start, end = size + graph.type_of(root).dtype.itemsize, -1, n
        buffers.append(Buffer(size, start, end))
        owners.append(("tensor", members))
    workspace = 0
    scratch_slots: list[list] = [[] for _ in range(n)]
    for s, node in enumerate(graph.nodes):
        for k, (t, persistent) in enumerate(x for part in step_scratch(graph, node) for x in part):
            if persistent:
                workspace += t.nbytes
                scratch_slots[s].append(None)
            else:
                scratch_slots[s].append(len(buffers))
                buffers.append(Buffer(t.nbytes, s, s))
                owners.append(("scratch", (s, k)))
    offsets, total, stats = place_buffers(buffers)
    tensors, ones = {}, []
    for (kind, what), off in zip(owners, offsets):
        if kind == "tensor":
            for m in what:
                tensors[m] = off
            if groups.find(what[0]) in ones_roots:
                t = graph.type_of(what[0])
                ones.append({"offset": off + t.nbytes, "dtype": t.dtype.name})
    scratch = [[offsets[b] if b is not None else None for b in slots] for slots in scratch_slots]
    stats["naive_bytes"] = sum(graph.type_of(t).nbytes for t in define) + sum(
        buffers[b].size for slots in scratch_slots for b in slots if b is not None)
    return {"tensors": tensors, "scratch": scratch, "skip": skip, "ones": ones,
            "workspace_bytes": workspace, **stats}
