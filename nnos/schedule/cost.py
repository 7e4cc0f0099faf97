"""The cost model: FLOPs and bytes moved per step and in total."""
from __future__ import annotations

from ..ir import Graph
from ..ops import OPS


def step_cost(graph: Graph, node) -> dict:
    op = OPS[node.op]
    in_types = [graph.type_of(i) if i else None for i in node.inputs]
    out_types = [graph.type_of(o) if o else None for o in node.outputs]
    flops = int(op.flops(node, in_types, out_types)) if op.flops else 0
    flops += sum(out_types[0].size for _ in node.epilogue)
    moved = sum(graph.type_of(i).nbytes for i in node.all_inputs() if i)
    moved += sum(t.nbytes for t in out_types if t is not None)
    return {"step": node.name, "ops": "+".join([node.op] + [e.op for e in node.epilogue]),
            "flops": flops, "bytes": moved}


def cost_model(graph: Graph) -> dict:
    steps = [step_cost(graph, n) for n in graph.nodes]
    return {"flops": sum(s["flops"] for s in steps), "bytes": sum(s["bytes"] for s in steps),
            "weight_bytes": sum(c.nbytes for c in graph.consts.values()), "steps": steps}
