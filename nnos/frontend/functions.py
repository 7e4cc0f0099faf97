"""ONNX ops defined as functions of other ops (Attention, and others onnx defines so), expanded
into their definition when nnos has no kernel of its own for them.

onnx builds the body for the node at hand (its attributes, which optional inputs it has, their
types: a context-dependent function), so it needs the types of the node's inputs: the model is
shape-inferred once first. The body's values are renamed under the node's name; its outputs are
the node's. Expansion repeats (a body may use another function op) up to a fixed depth.
"""
from __future__ import annotations

import onnx
from onnx import helper

from ..errors import ModelError

DEPTH = 4


def _schema(op: str, opset: int):
    try:
        return onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError:
        return None


def _body(node, schema, types: dict) -> onnx.FunctionProto | None:
    if schema.has_context_dependent_function:
        ins = []
        for name in node.input:
            t = types.get(name)
            if name and t is None:
                raise ModelError(f"node {node.name!r} ({node.op_type}): the type of its input {name!r} is not "
                                 "known, so its ONNX definition cannot be expanded")
            ins.append((t or onnx.TypeProto()).SerializeToString())
        data = schema.get_context_dependent_function(node.SerializeToString(), ins)
        return onnx.FunctionProto.FromString(data) if data else None
    if schema.has_function:
        return schema.function_body
    return None


def _bind_attrs(body_node, node) -> None:
    """Attributes the body takes from the node (ref_attr_name): the node's value, or dropped."""
    given = {a.name: a for a in node.attribute}
    kept = []
    for a in body_node.attribute:
        if a.ref_attr_name:
            if a.ref_attr_name in given:
                b = onnx.AttributeProto()
                b.CopyFrom(given[a.ref_attr_name])
                b.name = a.name
                kept.append(b)
        else:
            kept.append(a)
    del body_node.attribute[:]
    body_node.attribute.extend(kept)


def _splice(node, fn: onnx.FunctionProto) -> list:
    names = {f: a for f, a in zip(fn.input, node.input)}
    names.update({f: a or f"{node.name}/{f}" for f, a in zip(fn.output, node.output)})

    def rename(v: str) -> str:
        return "" if not v else names.get(v, f"{node.name}/{v}")
    out = []
    for i, b in enumerate(fn.node):
        n = onnx.NodeProto()
        n.CopyFrom(b)
        n.name = f"{node.name}/{b.name or b.op_type + str(i)}"
        n.input[:] = [rename(v) for v in b.input]
        n.output[:] = [rename(v) for v in b.output]
        _bind_attrs(n, node)
        out.append(n)
    return out


def expand(model: onnx.ModelProto, known: set, opset: int) -> onnx.ModelProto:
    """``model`` with every node whose op is not in ``known`` and that onnx defines as a
    function replaced by that function's nodes (the model itself when there is none)."""
    for _ in range(DEPTH):
        todo = {i for i, n in enumerate(model.graph.node) if n.op_type not in known and n.domain in ("", "ai.onnx")
                and (s := _schema(n.op_type, opset)) is not None and (s.has_function or s.has_context_dependent_function)}
        if not todo:
            return model
        model = onnx.ModelProto.FromString(model.SerializeToString())     # the caller's stays as it was
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception as e:                       # noqa: BLE001 - onnx raises several kinds
            raise ModelError(f"shape inference (to expand {model.graph.node[min(todo)].op_type}) failed: {e}") from e
        g = inferred.graph
        types = {v.name: v.type for v in list(g.value_info) + list(g.input) + list(g.output)}
        types.update({t.name: helper.make_tensor_type_proto(t.data_type, list(t.dims)) for t in g.initializer})
        nodes = []
        for i, n in enumerate(model.graph.node):
            n.name = n.name or f"{n.op_type}_{i}"
            fn = _body(n, _schema(n.op_type, opset), types) if i in todo else None
            nodes.extend(_splice(n, fn) if fn is not None else [n])
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model
