"""Quantized models: the two forms onnxruntime's quantizer writes, as integer products.

- ``lower``: QLinearMatMul and QLinearConv (the QOperator form) become the integer product
  (MatMulInteger / ConvInteger, int32), the bias added in int32, and a requantization exactly as
  the ONNX reference computes it: ``rint(acc * (a_scale * b_scale / y_scale)) + y_zero_point``,
  saturated (a DequantizeLinear by that multiplier, then a QuantizeLinear by 1).
- ``integer_products``: the QDQ form (``quantize_static``'s default) — a MatMul, Gemm or 2-D
  Conv, ungrouped or depthwise (the products nnos has integer kernels for; another grouped one
  stays a float convolution of the dequantized values, which is the model's own definition)
  whose activation is DequantizeLinear(8-bit tensor) and whose weight is DequantizeLinear(8-bit
  constant) — becomes the integer product of the 8-bit values, dequantized once by the product
  of the scales (per output channel where the weight's scale is), then the float bias. The
  model's float products of dequantized values equal this up to float32 rounding, so only a
  rounding at a later QuantizeLinear's half-way point can differ: verify.TOLERANCE["quantized"].

The infer pass keeps DequantizeLinear of a constant 8-bit weight unfolded when a product reads
it (``keep_weight``) so that the rewrite can see the 8-bit values; what is not rewritten is
folded afterwards.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..ops.quant import EIGHT_BIT

LOWERED = ("QLinearMatMul", "QLinearConv")
PRODUCTS = ("MatMul", "Gemm", "Conv")
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _const(g: Graph, name: str, value: np.ndarray) -> str:
    g.consts[name] = np.ascontiguousarray(value)
    return name


def _requantize(g: Graph, node: Node, acc: str, scales: tuple[str, str, str], y_zp: str, axis: int) -> list[Node]:
    """acc (int32) → rint(acc * (s_a * s_b / s_y)) + y_zp, saturated to y_zp's type."""
    p = f"{node.outputs[0]}/requant"
    s_a, s_b, s_y = scales
    return [Node("Mul", f"{p}/mul", [s_a, s_b], [f"{p}/ab"]),
            Node("Div", f"{p}/div", [f"{p}/ab", s_y], [f"{p}/m"]),
            Node("Cast", f"{p}/cast", [f"{p}/m"], [f"{p}/m32"], {"to": 1}),
            Node("DequantizeLinear", f"{p}/dq", [acc, f"{p}/m32"], [f"{p}/real"], {"axis": axis}),
            Node("QuantizeLinear", f"{p}/q", [f"{p}/real", _const(g, f"{p}/one", np.float32(1)), y_zp],
                 node.outputs[:1])]


def lower(g: Graph, node: Node) -> list[Node] | None:
    """The nodes ``node`` stands for, if it is one nnos lowers (its inputs' types are known)."""
    if node.op == "QLinearMatMul":
        if len(node.inputs) != 8:
            raise node.fail(f"QLinearMatMul takes 8 inputs, got {len(node.inputs)}")
        a, sa, za, b, sb, zb, sy, zy = node.inputs
        acc = f"{node.outputs[0]}/acc"
        return [Node("MatMulInteger", f"{node.outputs[0]}/matmul", [a, b, za, zb], [acc])] + \
            _requantize(g, node, acc, (sa, sb, sy), zy, -1)
    if node.op == "QLinearConv":
        if len(node.inputs) not in (8, 9):
            raise node.fail(f"QLinearConv takes 8 or 9 inputs, got {len(node.inputs)}")
        x, sx, zx, w, sw, zw, sy, zy = node.inputs[:8]
        bias = node.inputs[8] if len(node.inputs) > 8 else ""
        acc = f"{node.outputs[0]}/acc"
        attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRS}
        out = [Node("ConvInteger", f"{node.outputs[0]}/conv", [x, w, zx, zw], [acc], attrs)]
        if bias:
            wt = g.type_of(w)
            shape = _const(g, f"{node.outputs[0]}/bias_shape", np.array([1, wt.shape[0]] + [1] * (len(wt.shape) - 2), np.int64))
            out += [Node("Reshape", f"{node.outputs[0]}/bias", [bias, shape], [f"{node.outputs[0]}/bias_b"]),
                    Node("Add", f"{node.outputs[0]}/add_bias", [acc, f"{node.outputs[0]}/bias_b"], [f"{acc}+b"])]
            acc = f"{acc}+b"
        return out + _requantize(g, node, acc, (sx, sw, sy), zy, 1)
    return None


# --- QDQ → integer products -----------------------------------------------------------------
def keep_weight(g: Graph, node: Node, consumers: dict) -> bool:
    """A DequantizeLinear of a constant 8-bit weight that a product reads as its weight: kept
    (not folded) until ``integer_products`` has seen it."""
    if node.op != "DequantizeLinear" or not all(i in g.consts for i in node.inputs if i):
        return False
    if g.consts[node.inputs[0]].dtype not in EIGHT_BIT:
        return False
    return any(c.op in PRODUCTS and len(c.inputs) > 1 and c.inputs[1] == node.outputs[0]
               for c in consumers.get(node.outputs[0], []))


def _dq(g: Graph, producers, name: str, const: bool):
    """(values, scale, zero point or None) of DequantizeLinear(8-bit) producing ``name``, its
    scale and zero point constants; None when ``name`` is not that."""
    d = producers.get(name)
    if d is None or d.op != "DequantizeLinear" or int(d.attrs.get("block_size", 0)):
        return None
    ins = list(d.inputs) + [""] * (3 - len(d.inputs))
    x, s, z = ins[:3]
    if g.type_of(x).dtype not in EIGHT_BIT or s not in g.consts or (z and z not in g.consts):
        return None
    if const != (x in g.consts):
        return None
    return d, x, g.consts[s], (g.consts[z] if z else None)


def _weight_axis(d: Node, rank: int) -> int:
    return int(d.attrs.get("axis", 1)) % rank


def _matmul_weight(g, node, wq, ws, wz, wd):
    """The 8-bit [K, N] weight of a MatMul or Gemm, its per-column scale and zero point; None
    when the weight's quantization is not per tensor or per output column."""
    w = g.consts[wq]
    trans = node.op == "Gemm" and int(node.attrs.get("transB", 0))
    if w.ndim != 2 or (ws.size != 1 and _weight_axis(wd, 2) != (0 if trans else 1)):
        return None
    if trans:
        w = w.T
    return np.ascontiguousarray(w), ws.reshape(-1), None if wz is None else wz.reshape(-1)


def _rewrite(g: Graph, node: Node, producers) -> list[Node] | None:
    if len(node.inputs) < 2 or g.type_of(node.outputs[0]).dtype != np.float32:
        return None           # a float16 product (precision "model") keeps its float16 scales and output
    act = _dq(g, producers, node.inputs[0], const=False)
    wgt = _dq(g, producers, node.inputs[1], const=True)
    if act is None or wgt is None or act[2].size != 1 or (act[3] is not None and act[3].size != 1):
        return None
    (_, xq, xs, xz), (wd, wq, ws, wz) = act, wgt
    p = node.outputs[0] + "/int8"
    if node.op == "Conv":
        w = g.consts[wq]
        if ws.size != 1 and _weight_axis(wd, w.ndim) != 0:
            return None
        group = int(node.attrs.get("group", 1))
        if w.ndim != 4 or (group != 1 and not (group == w.shape[0] and w.shape[1] == 1)):
            return None           # grouped (not depthwise) and 1-D/3-D: the float kernels on the dequantized values
        attrs = {k: v for k, v in node.attrs.items() if k in _CONV_ATTRS}
        prod = Node("ConvInteger", f"{p}/conv", [xq, wq, _zp(g, p, xz, "x"), _zp(g, p, wz, "w")], [f"{p}/acc"], attrs)
        axis, bias = 1, node.inputs[2] if len(node.inputs) > 2 else ""
    else:
        if node.op == "Gemm" and (int(node.attrs.get("transA", 0)) or float(node.attrs.get("alpha", 1.0)) != 1.0
                                  or float(node.attrs.get("beta", 1.0)) != 1.0):
            return None
        got = _matmul_weight(g, node, wq, ws, wz, wd)
        if got is None:
            return None
        w, ws, wz = got
        wq = _const(g, f"{p}/w", w)
        prod = Node("MatMulInteger", f"{p}/matmul", [xq, wq, _zp(g, p, xz, "x"), _zp(g, p, wz, "w")], [f"{p}/acc"])
        axis, bias = -1, node.inputs[2] if node.op == "Gemm" and len(node.inputs) > 2 else ""
    scale = _const(g, f"{p}/scale", (xs.astype(np.float32).reshape(()) * ws.astype(np.float32)).reshape(-1))
    real = f"{p}/real" if bias else node.outputs[0]
    out = [prod, Node("DequantizeLinear", f"{p}/dq", [f"{p}/acc", scale], [real], {"axis": axis})]
    if bias:
        b = bias
        if node.op == "Conv":
            rank = g.consts[wq].ndim
            shape = _const(g, f"{p}/bias_shape", np.array([1, -1] + [1] * (rank - 2), np.int64))
            out.append(Node("Reshape", f"{p}/bias", [bias, shape], [f"{p}/bias_b"]))
            b = f"{p}/bias_b"
        out.append(Node("Add", f"{p}/add_bias", [real, b], node.outputs[:1]))
    return out


def _zp(g: Graph, prefix: str, zp, which: str) -> str:
    return "" if zp is None else _const(g, f"{prefix}/{which}_zero_point", zp)


def integer_products(graph: Graph) -> Graph:
    """Every QDQ product nnos can run on the 8-bit values, rewritten to; the rest unchanged.
    Types of the new tensors are inferred by the caller's next infer sweep."""
    g = graph.copy()
    producers = g.producers()
    nodes: list[Node] = []
    for node in g.nodes:
        new = _rewrite(g, node, producers) if node.op in PRODUCTS else None
        nodes.extend(new if new is not None else [node])
    g.nodes = nodes
    return g
