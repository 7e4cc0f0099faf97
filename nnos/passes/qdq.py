"""A QDQ model's roundings of float tensors to their 8-bit grids, as few and as cheap as exact.

onnxruntime's ``quantize_static`` (QDQ format) follows nearly every float op with a
QuantizeLinear and a DequantizeLinear by the same scale and zero point — a transformer's QDQ
form has one after every Reshape, Transpose, Gather and after each op of a GELU — and only the
products read the 8-bit values (passes/quant.py makes those integer products).

- ``fake_quantize``: a QuantizeLinear whose only reader is such a DequantizeLinear becomes one
  elementwise op, ``nnos.QuantizeDequantize`` (ops/quant.py), float32 in and out, that the
  fusion pass chains with the ops around it: a GELU between roundings is one loop again.
- ``drop_requantize``: a rounding of a tensor that is already on that grid — made by a
  DequantizeLinear or a rounding by the same per-tensor scale and zero point, through ops that
  only move or select values — is the identity, and goes: x = (q − z)·s gives x / s = q − z
  exactly after rounding (|q − z| < 2**16, one rounding error each way), so the value comes back.

Both exact: the plan's outputs are bitwise those of the model's own QuantizeLinear and
DequantizeLinear steps.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, contiguous
from ..ops.elementwise import ONNX_TYPE
from ..ops.quant import EIGHT_BIT, FAKE_QUANT, quantized_dtype

# ops whose output values are some of their data inputs' values (by index: None = every input)
MOVES = {"Reshape": (0,), "Flatten": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Identity": (0,),
         "Transpose": (0,), "Gather": (0,), "Slice": (0,), "Expand": (0,), "Split": (0,), "MaxPool": (0,),
         "Concat": None}
F32 = np.dtype(np.float32)


def _params(g: Graph, node: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """A QuantizeLinear's or DequantizeLinear's constant scale and zero point (the zero point's
    type the grid's: absent, 0 of the quantized type), or None."""
    ins = list(node.inputs) + ["", ""]
    s, z = ins[1], ins[2]
    if s not in g.consts or (z and z not in g.consts) or int(node.attrs.get("block_size", 0)):
        return None
    if z:
        zp = g.consts[z]
    elif node.op == "QuantizeLinear":
        zp = np.zeros((), quantized_dtype(node, None))
    else:
        zp = np.zeros((), g.type_of(node.inputs[0]).dtype)
    scale = g.consts[s]
    if zp.dtype not in EIGHT_BIT or scale.dtype != F32 or zp.shape != scale.shape and not zp.size == scale.size == 1:
        return None
    return scale, zp


def same_grid(a, b) -> bool:
    return a is not None and b is not None and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


def _pair(g: Graph, q: Node, consumers) -> tuple[Node, np.ndarray, np.ndarray] | None:
    """The DequantizeLinear that is ``q``'s only reader by the same grid, with that grid."""
    if q.op != "QuantizeLinear" or not q.inputs or g.type_of(q.inputs[0]).dtype != F32:
        return None
    y = q.outputs[0]
    users = consumers.get(y, [])
    if y in g.outputs or len(users) != 1 or users[0].op != "DequantizeLinear" or users[0].inputs[0] != y:
        return None
    dq, params = users[0], _params(g, q)
    if g.type_of(dq.outputs[0]).dtype != F32 or not same_grid(params, _params(g, dq)):
        return None
    if params[0].size != 1 and q.attrs.get("axis", 1) != dq.attrs.get("axis", 1):
        return None
    return dq, *params


def _broadcast(g: Graph, q: Node, value: np.ndarray, base: str) -> str:
    """A parameter as a constant that broadcasts against x as numpy's do: one value, or the
    per-axis values shaped (C, 1, …, 1)."""
    rank = len(g.type_of(q.inputs[0]).shape)
    if value.size == 1:
        shaped = value.reshape(())
    else:
        axis = int(q.attrs.get("axis", 1)) % rank
        shaped = value.reshape((-1,) + (1,) * (rank - 1 - axis))
    name = g.fresh(base)
    g.consts[name] = contiguous(shaped)
    return name


def fake_quantize(graph: Graph) -> Graph:
    """Each QuantizeLinear → DequantizeLinear pair of ``_pair`` as one nnos.QuantizeDequantize."""
    g = graph.copy()
    consumers = g.consumers()
    nodes, gone = [], set()
    for node in g.nodes:
        if id(node) in gone:
            continue
        pair = _pair(g, node, consumers)
        if pair is None:
            nodes.append(node)
            continue
        dq, scale, zp = pair
        gone.add(id(dq))
        s = _broadcast(g, node, scale, f"{node.outputs[0]}/grid_scale")
        z = _broadcast(g, node, zp, f"{node.outputs[0]}/grid_zero_point")
        nodes.append(Node(FAKE_QUANT, node.name, [node.inputs[0], s, z], list(dq.outputs), {"to": ONNX_TYPE[zp.dtype]}))
    g.nodes = nodes
    return g


def grid_of(g: Graph, node: Node):
    """The per-tensor grid a DequantizeLinear or a rounding puts its output on, or None."""
    if node.op == "DequantizeLinear" and g.type_of(node.inputs[0]).dtype in EIGHT_BIT \
            and g.type_of(node.outputs[0]).dtype == F32:
        params = _params(g, node)
    elif node.op == FAKE_QUANT:
        params = g.consts[node.inputs[1]], g.consts[node.inputs[2]]
    else:
        return None
    return params if params is not None and params[0].size == 1 else None


def carry(on: dict, node: Node, grid) -> None:
    """Note in ``on`` (tensor → grid) the grid of ``node``'s output: its own (``grid``, from
    ``grid_of``), or its data inputs' common grid when it only moves or selects values."""
    if grid is not None:
        on[node.outputs[0]] = grid
    elif node.op in MOVES:
        which = MOVES[node.op]
        data = [i for k, i in enumerate(node.inputs) if i and (which is None or k in which)]
        grids = [on.get(i) for i in data]
        if data and all(same_grid(grids[0], x) for x in grids):
            on.update({o: grids[0] for o in node.outputs[:1 if node.op == "MaxPool" else None] if o})


def drop_requantize(graph: Graph) -> Graph:
    """Each rounding whose input is already on its grid, removed (its readers read the input)."""
    g = graph.copy()
    on: dict[str, tuple] = {}                        # tensor → the grid its values are on
    renamed: dict[str, str] = {}
    nodes = []
    for node in g.nodes:
        node.inputs = [renamed.get(i, i) for i in node.inputs]
        grid = grid_of(g, node)
        if node.op == FAKE_QUANT and grid is not None and same_grid(on.get(node.inputs[0]), grid) \
                and node.outputs[0] not in g.outputs:
            renamed[node.outputs[0]] = node.inputs[0]
            continue
        carry(on, node, grid)
        nodes.append(node)
    g.nodes = nodes
    return g
