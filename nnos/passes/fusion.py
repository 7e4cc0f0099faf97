"""Fusions over the typed graph.

- fold_batchnorm: Conv/Gemm followed by inference BatchNormalization → one Conv/Gemm with
  rescaled weights and bias.
- fuse_bias: MatMul(x, W) + b with constant 2-D W and b → Gemm(x, W, b).
- prepack_gemm: Gemm with constant B gets B stored as (K, N) with alpha and beta folded in (a
  canonical form every backend reads: no transB, no alpha, beta 1).
- fuse_elementwise: an op followed by a chain of elementwise ops (activations, bias or residual
  adds, scales) becomes one step that applies the chain in place on its output.
"""
from __future__ import annotations

import numpy as np

from ..ir import Epilogue, Graph, Node, contiguous
from ..ops import OPS
from ..ops.norm import bn_affine


def _sole_consumer(graph: Graph, name: str, consumers) -> Node | None:
    users = consumers.get(name, [])
    if name in graph.outputs or len(users) != 1:
        return None
    return users[0]


def _replace(graph: Graph, old: Node, new: Node | None, drop: Node):
    """Put ``new`` where ``old`` was, and remove ``drop``."""
    graph.nodes = [new if n is old else n for n in graph.nodes if n is not drop and (n is not old or new)]


def fold_batchnorm(graph: Graph) -> Graph:
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        consumers = g.consumers()
        for node in g.nodes:
            if node.op not in ("Conv", "Gemm") or node.epilogue:
                continue
            bn = _sole_consumer(g, node.outputs[0], consumers)
            if bn is None or bn.op != "BatchNormalization" or bn.inputs[0] != node.outputs[0]:
                continue
            if not all(i in g.consts for i in bn.inputs[1:5]) or node.inputs[1] not in g.consts:
                continue
            if node.op == "Gemm" and (node.attrs.get("transA", 0) or len(g.type_of(node.outputs[0]).shape) != 2):
                continue
            w = g.consts[node.inputs[1]]
            a, b = bn_affine(*(g.consts[i] for i in bn.inputs[1:5]), float(bn.attrs.get("epsilon", 1e-5)))
            dtype = w.dtype
            if node.op == "Conv":
                w2 = w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))
                bias_scale = 1.0
            else:
                alpha = float(node.attrs.get("alpha", 1.0))
                axis = 0 if node.attrs.get("transB", 0) else 1
                w2 = w.astype(np.float64) * (a[:, None] if axis == 0 else a[None, :]) * alpha
                bias_scale = float(node.attrs.get("beta", 1.0))
            has_bias = len(node.inputs) > 2 and node.inputs[2]
            if has_bias and node.inputs[2] not in g.consts:
                continue
            old_b = g.consts[node.inputs[2]].astype(np.float64) * bias_scale if has_bias else 0.0
            if node.op == "Gemm" and has_bias and np.shape(old_b) not in ((), (1,), (len(a),), (1, len(a))):
                continue
            new_b = np.asarray(old_b).reshape(-1) * a + b if has_bias else b
            wn, bn_ = g.fresh(node.inputs[1] + "_bn"), g.fresh(bn.outputs[0] + "_bias")
            g.consts[wn] = contiguous(w2.astype(dtype))
            g.consts[bn_] = contiguous(np.broadcast_to(new_b, a.shape).astype(dtype))
            attrs = dict(node.attrs)
            if node.op == "Gemm":
                attrs.update(alpha=1.0, beta=1.0)
            fused = Node(node.op, node.name, [node.inputs[0], wn, bn_], [bn.outputs[0]], attrs)
            _replace(g, node, fused, bn)
            changed = True
            break
    return g


def fuse_bias(graph: Graph) -> Graph:
    g = graph.copy()
    consumers = g.consumers()
    for node in list(g.nodes):
        if node.op != "MatMul" or node.inputs[1] not in g.consts:
            continue
        w, x = g.consts[node.inputs[1]], g.type_of(node.inputs[0])
        if w.ndim != 2 or len(x.shape) != 2:
            continue
        add = _sole_consumer(g, node.outputs[0], consumers)
        if add is None or add.op != "Add":
            continue
        other = add.inputs[1] if add.inputs[0] == node.outputs[0] else add.inputs[0]
        if other not in g.consts or g.type_of(add.outputs[0]) != g.type_of(node.outputs[0]):
            continue
        gemm = Node("Gemm", node.name, [node.inputs[0], node.inputs[1], other], [add.outputs[0]], {})
        _replace(g, node, gemm, add)
    return g


def prepack_gemm(graph: Graph) -> Graph:
    g = graph.copy()
    for i, node in enumerate(g.nodes):
        if node.op != "Gemm" or node.inputs[1] not in g.consts:
            continue
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        has_c = len(node.inputs) > 2 and node.inputs[2]
        if not node.attrs.get("transB", 0) and alpha == 1.0 and (beta == 1.0 or not has_c):
            continue
        if has_c and beta != 1.0 and node.inputs[2] not in g.consts:
            continue
        w = g.consts[node.inputs[1]]
        w = w.T if node.attrs.get("transB", 0) else w
        wn = g.fresh(node.inputs[1] + "_packed")
        g.consts[wn] = contiguous((w.astype(np.float64) * alpha).astype(w.dtype)) if alpha != 1.0 \
            else contiguous(w)
        inputs = [node.inputs[0], wn]
        if has_c and beta != 0.0:
            c = node.inputs[2]
            if beta != 1.0:
                cv = g.consts[c]
                c = g.fresh(c + "_scaled")
                g.consts[c] = contiguous((cv.astype(np.float64) * beta).astype(cv.dtype))
            inputs.append(c)
        attrs = {k: v for k, v in node.attrs.items() if k == "transA"}
        g.nodes[i] = Node("Gemm", node.name, inputs, node.outputs, attrs)
    return g


def _chainable(graph: Graph, node: Node, chain: str, ready: set) -> Epilogue | None:
    """Can ``node`` (which reads tensor ``chain``) run in place as an epilogue on ``chain``?"""
    op = OPS.get(node.op)
    if op is None or not op.elementwise or len(node.outputs) != 1:
        return None
    if graph.type_of(node.outputs[0]) != graph.type_of(chain) or node.inputs.count(chain) != 1:
        return None
    operands = [i for i in node.inputs if i != chain]
    if not all((not o) or o in ready for o in operands):
        return None
    if node.op == "Clip" and node.inputs[0] == chain and graph.type_of(chain).dtype.kind == "f" and \
            all(not o or (o in graph.consts and graph.consts[o].size == 1) for o in operands):
        # constant bounds as attributes: an activation a kernel applies in registers (ReLU6)
        bounds = {k: float(graph.consts[o].reshape(())) for k, o in zip(("min", "max"), node.inputs[1:]) if o}
        return Epilogue("Clip", bounds, [], 0)
    return Epilogue(node.op, dict(node.attrs), operands, node.inputs.index(chain))


def fuse_elementwise(graph: Graph) -> Graph:
    g = graph.copy()
    ready = set(g.inputs) | set(g.consts)
    nodes, dropped = [], set()
    for node in g.nodes:
        if id(node) in dropped:
            continue
        op = OPS[node.op]
        if len(node.outputs) == 1 and not op.view:
            while True:
                consumers = g.consumers()
                nxt = _sole_consumer(g, node.outputs[0], consumers)
                epi = _chainable(g, nxt, node.outputs[0], ready) if nxt is not None else None
                if epi is None:
                    break
                node.epilogue.append(epi)
                node.outputs = list(nxt.outputs)
                dropped.add(id(nxt))
                g.nodes = [n for n in g.nodes if n is not nxt]
        nodes.append(node)
        ready.update(o for o in node.outputs if o)
    g.nodes = nodes
    return g
