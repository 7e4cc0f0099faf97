"""ONNX → nnos IR.

Reads the model with the ``onnx`` package (external-data files beside the .onnx included),
checks it, fixes symbolic dimensions (the batch dimension to ``batch``, others from ``dims``)
and converts initializers and Constant nodes to numpy constants. Types of intermediate tensors
are left to shape inference.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from .functions import expand
from ..errors import ModelError
from ..limits import tensor_problem
from ..ir import SUPPORTED_DTYPES, Graph, Node, TensorType, contiguous

MIN_OPSET = 13


def _onnx():
    import onnx  # deferred: only compiling needs it, loading a plan does not
    return onnx


def _load(path: str):
    onnx = _onnx()
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(path, load_external_data=True)
    except Exception as e:  # protobuf DecodeError, missing external file, ...
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: parsed as ONNX but holds no graph (empty, truncated or not a model)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"{path}: the ONNX checker rejects this model: {e}") from e
    return model


def _opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelError("the model imports no default-domain (ai.onnx) opset")


def _upgrade(model, path: str, opset: int):
    """Models older than opset 13 are upgraded with onnx's version converter."""
    onnx = _onnx()
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:
        raise ModelError(f"{path}: opset {opset} is older than {MIN_OPSET} and onnx's version converter "
                         f"could not upgrade it ({type(e).__name__}: {e}); re-export it with "
                         f"torch.onnx.export(..., opset_version=17)") from e


def _dtype(elem_type: int, what: str) -> np.dtype:
    onnx = _onnx()
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception as e:
        raise ModelError(f"{what}: ONNX element type {elem_type} has no numpy equivalent") from e
    if dt not in SUPPORTED_DTYPES:
        raise ModelError(f"{what}: dtype {dt} is not supported; supported: "
                         + ", ".join(d.name for d in SUPPORTED_DTYPES))
    return dt


def _array(tensor, what: str) -> np.ndarray:
    onnx = _onnx()
    _dtype(tensor.data_type, what)
    try:
        return contiguous(onnx.numpy_helper.to_array(tensor))
    except Exception as e:
        raise ModelError(f"{what}: cannot read tensor data ({e})") from e


def _attrs(node) -> dict:
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        what = f"node {node.name!r} (op {node.op_type}) attribute {a.name!r}"
        if a.type == onnx.AttributeProto.TENSOR:
            out[a.name] = _array(a.t, what)
        elif a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.SPARSE_TENSOR):
            raise ModelError(f"{what}: subgraph and sparse attributes are not supported")
        else:
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, list):
                v = [x.decode() if isinstance(x, bytes) else x for x in v]
            out[a.name] = v
    return out


def _constant_value(node, attrs) -> np.ndarray:
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return contiguous(np.asarray(attrs[key], dtype=dtype))
    raise ModelError(f"node {node.name!r} (op Constant): value kind {sorted(attrs)} is not supported")


def _fix_dims(value_info, batch: int, dims: dict[str, int], batch_param: list,
              fixed: list | None = None) -> tuple[int, ...]:
    """The input's static shape; each symbolic dimension fixed here is said in ``fixed``."""
    shape = []
    fixed = [] if fixed is None else fixed
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        raise ModelError(f"input {value_info.name!r} has no shape; nnos needs static shapes")
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value"):
            shape.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param in dims:
            shape.append(int(dims[d.dim_param]))
            fixed.append(f"input {value_info.name!r} dimension {i} ({d.dim_param!r}) = {shape[-1]} (--dim)")
        elif not batch_param or batch_param[0] == d.dim_param:   # the first symbolic name is the batch
            batch_param[:] = [d.dim_param]
            shape.append(batch)
            fixed.append(f"input {value_info.name!r} dimension {i} ({d.dim_param or '?'!r}) = {batch} as the batch; "
                         f"give --dim {d.dim_param or 'NAME'}=N for another size")
        else:
            name = d.dim_param or "?"
            raise ModelError(f"input {value_info.name!r} dimension {i} is dynamic ({name!r}); "
                             f"fix it at compile time with dims={{{name!r}: N}} (CLI: --dim {name}=N)")
    problem = tensor_problem(shape)
    if problem:
        raise ModelError(f"input {value_info.name!r}: {problem}")
    return tuple(shape)


def _inputs(g, consts: dict, batch: int, dims: dict, freeze: dict, fixed: list) -> tuple[dict, list[str]]:
    """The graph's inputs with static types ({name: TensorType}, names in order); a frozen one
    becomes a constant in ``consts``, as does an initializer listed as an input (old exporters)."""
    types: dict[str, TensorType] = {}
    batch_param: list = []
    inputs = []
    for vi in g.input:
        if not vi.type.HasField("tensor_type"):
            kind = vi.type.WhichOneof("value") or "untyped"
            raise ModelError(f"input {vi.name!r} is of kind {kind!r}; nnos supports tensor inputs only")
        if vi.name in freeze:
            dt = _dtype(vi.type.tensor_type.elem_type, f"input {vi.name!r}")
            consts[vi.name] = contiguous(np.asarray(freeze.pop(vi.name), dtype=dt))
            continue
        if vi.name in consts:
            continue   # an initializer listed as input (old exporters): a constant on the device
        dt = _dtype(vi.type.tensor_type.elem_type, f"input {vi.name!r}")
        types[vi.name] = TensorType(dt, _fix_dims(vi, batch, dims, batch_param, fixed))
        inputs.append(vi.name)
    if freeze:
        raise ModelError(f"cannot freeze {sorted(freeze)}: no graph input has that name; "
                         f"inputs are {[vi.name for vi in g.input]}")
    return types, inputs


def _nodes(g, consts: dict) -> list[Node]:
    """The graph's nodes as IR nodes; Constant nodes' values go into ``consts``."""
    nodes = []
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        if n.domain not in ("", "ai.onnx"):
            raise ModelError(f"node {name!r} (op {n.op_type}) is in domain {n.domain!r}; "
                             "nnos supports the default ONNX domain only")
        n.name = name
        attrs = _attrs(n)
        if n.op_type == "Constant":
            consts[n.output[0]] = _constant_value(n, attrs)
            continue
        nodes.append(Node(n.op_type, name, list(n.input), list(n.output), attrs))
    return nodes


def import_onnx(path: str, batch: int = 1, dims: dict[str, int] | None = None,
                freeze: dict[str, np.ndarray] | None = None, known_ops: set | None = None) -> tuple[Graph, dict]:
    """Read an ONNX model into a Graph with static input types and constant weights.

    Returns the graph and the source's metadata: sha256 of the model with its weights
    (external data included), opset and producer. ``freeze`` turns named graph inputs into
    constants with the given values (e.g. a configuration input that never changes). An op not
    in ``known_ops`` that onnx defines as a function of others is expanded (functions.py)."""
    if batch < 1:
        raise ModelError(f"batch must be at least 1, got {batch}")
    model = _load(path)
    opset = source_opset = _opset(model)
    if opset < MIN_OPSET:
        model = _upgrade(model, path, opset)
        opset = MIN_OPSET
    for imp in model.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            used = [n for n in model.graph.node if n.domain == imp.domain]
            if used:
                raise ModelError(f"node {used[0].name!r} (op {used[0].op_type}) is in domain "
                                 f"{imp.domain!r}; nnos supports the default ONNX domain only")
    for i, n in enumerate(model.graph.node):          # names first: the source hash covers them
        n.name = n.name or f"{n.op_type}_{i}"
    g = (model if known_ops is None else expand(model, known_ops, opset)).graph
    consts = {t.name: _array(t, f"initializer {t.name!r}") for t in g.initializer}
    fixed: list[str] = []
    types, inputs = _inputs(g, consts, batch, dims or {}, dict(freeze or {}), fixed)
    nodes = _nodes(g, consts)
    outputs = [o.name for o in g.output]
    info = {"source_sha256": hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest(),
            "opset": source_opset, "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "batch": batch, "fixed_dims": fixed}
    # an unnamed graph gets a fixed name, not the file's (an upload's temp name would change the id)
    return Graph(g.name or "main", inputs, outputs, nodes, types, consts), info
