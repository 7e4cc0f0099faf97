"""The Open Inference Protocol (KServe v2) REST endpoints, so standard clients work unchanged.

A model's name is its id in the store, or "active". Inference runs in this process (off the
loop's CPU), on a plan loaded from the store, one request at a time per model.
"""
from __future__ import annotations

import json
import threading

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from ... import __version__
from ...errors import NnosError
from ..deps import require_token, state

DTYPES = {"FP16": "float16", "FP32": "float32", "FP64": "float64", "INT8": "int8", "INT16": "int16",
          "INT32": "int32", "INT64": "int64", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
          "UINT64": "uint64", "BOOL": "bool"}
KSERVE = {v: k for k, v in DTYPES.items()}

health = APIRouter(prefix="/v2", tags=["kserve v2"])
router = APIRouter(prefix="/v2", tags=["kserve v2"], dependencies=[Depends(require_token)])


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list = Field(default_factory=list)
    parameters: dict | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    parameters: dict | None = None


@health.get("/health/live")
def live():
    return {"live": True}


@health.get("/health/ready")
def ready(st=Depends(state)):
    return {"ready": bool(st.store.state()["active"])}


@router.get("")
def server_metadata():
    return {"name": "nnos", "version": __version__, "extensions": ["binary_tensor_data", "model_repository"]}


def _resolve(st, name: str) -> str:
    mid = st.store.state()["active"] if name == "active" else name
    if not mid or mid not in st.store.ids():
        raise HTTPException(404, f"no model {name!r}")
    return mid


def _plan(st, mid: str):
    with st.plans_lock:
        entry = st.plans.get(mid)
        if entry is None:
            entry = st.plans[mid] = (st.store.load(mid), threading.Lock())
            while len(st.plans) > 8:
                st.plans.pop(next(iter(st.plans)))
    return entry


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
def model_metadata(name: str, version: str | None = None, st=Depends(state)):
    mid = _resolve(st, name)
    plan, _ = _plan(st, mid)
    spec = lambda t: {"name": t.name, "datatype": KSERVE[t.dtype.name], "shape": list(t.shape)}   # noqa: E731
    return {"name": name, "versions": [mid], "platform": "nnos_plan",
            "inputs": [spec(t) for t in plan.inputs], "outputs": [spec(t) for t in plan.outputs]}


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
def model_ready(name: str, version: str | None = None, st=Depends(state)):
    _resolve(st, name)
    return {"name": name, "ready": True}


@router.post("/repository/index")
def repository_index(st=Depends(state)):
    """Every stored model (and "active"), as Triton's repository extension lists them."""
    active = st.store.state()["active"]
    rows = [{"name": mid, "version": "1", "state": "READY"} for mid in st.store.ids()]
    return ([{"name": "active", "version": "1", "state": "READY"}] if active else []) + rows


@router.get("/models/{name}/config")
@router.get("/models/{name}/versions/{version}/config")
def model_config(name: str, version: str | None = None, st=Depends(state)):
    """The model's configuration in Triton's shape (what get_model_config shows)."""
    plan, _ = _plan(st, _resolve(st, name))
    spec = lambda t: {"name": t.name, "data_type": "TYPE_" + KSERVE[t.dtype.name], "dims": list(t.shape)}  # noqa: E731
    return {"name": name, "platform": "nnos_plan", "backend": "nnos", "max_batch_size": 0,
            "input": [spec(t) for t in plan.inputs], "output": [spec(t) for t in plan.outputs]}


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(name: str, req: Request, version: str | None = None, st=Depends(state)):
    """JSON, or JSON followed by raw tensors (the binary tensor data extension: the JSON's
    length in Inference-Header-Content-Length). Any Content-Type: stock clients send none."""
    mid = _resolve(st, name)
    plan, lock = _plan(st, mid)
    body, raw = parse_request(await req.body(), req.headers.get("inference-header-content-length"))
    feeds = _feeds(plan, body, raw)
    wanted, binary = _wanted(plan, body)

    def run():
        with lock:
            out = plan(feeds)
            return {k: v.copy() for k, v in out.items()}
    try:
        out = await run_in_threadpool(run)
    except NnosError as e:
        raise HTTPException(400, str(e)) from e
    unknown = [w for w in wanted if w not in out]
    if unknown:
        raise HTTPException(400, f"unknown outputs {unknown}; the model gives {sorted(out)}")
    return respond(name, mid, body.id, [(k, out[k], binary[k]) for k in wanted])


def parse_request(data: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    try:
        n = len(data) if header_length is None else int(header_length)
    except ValueError as e:
        raise HTTPException(400, f"Inference-Header-Content-Length must be a number, got {header_length!r}") from e
    if not 0 <= n <= len(data):
        raise HTTPException(400, f"Inference-Header-Content-Length {n} is outside the body's {len(data)} bytes")
    try:
        return InferRequest.model_validate_json(data[:n]), data[n:]
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise HTTPException(400, f"not an inference request: {where}: {first.get('msg')}") from e


def _feeds(plan, body: InferRequest, raw: bytes) -> dict:
    specs = {t.name: t for t in plan.inputs}
    feeds, offset = {}, 0
    for t in body.inputs:
        spec = specs.get(t.name)
        if spec is None:
            raise HTTPException(400, f"unknown input {t.name!r}; the model takes {sorted(specs)}")
        dt = DTYPES.get(t.datatype)
        if dt is None or np.dtype(dt) != spec.dtype:
            raise HTTPException(400, f"input {t.name!r}: datatype {t.datatype}, expected {KSERVE[spec.dtype.name]}")
        if tuple(t.shape) != tuple(spec.shape):
            raise HTTPException(400, f"input {t.name!r}: shape {t.shape}, expected {list(spec.shape)}")
        size = (t.parameters or {}).get("binary_data_size")
        if size is not None:
            if size != spec.type.nbytes or offset + size > len(raw):
                raise HTTPException(400, f"input {t.name!r}: binary_data_size {size}, expected {spec.type.nbytes} bytes "
                                         f"({len(raw) - offset} left in the body)")
            feeds[t.name] = np.frombuffer(raw, dt, spec.type.size, offset).reshape(spec.shape)
            offset += size
            continue
        try:
            feeds[t.name] = np.asarray(t.data, dtype=dt).reshape(t.shape)
        except (ValueError, TypeError) as e:
            raise HTTPException(400, f"input {t.name!r}: data does not fill shape {t.shape}: {e}") from e
    if offset != len(raw):
        raise HTTPException(400, f"{len(raw) - offset} bytes after the inputs' binary data")
    if set(feeds) != set(specs):
        raise HTTPException(400, f"missing inputs {sorted(set(specs) - set(feeds))}")
    return feeds


def _wanted(plan, body: InferRequest) -> tuple[list[str], dict]:
    """The outputs asked for, and whether each goes back as binary data."""
    default = bool((body.parameters or {}).get("binary_data_output", False))
    if body.outputs:
        return [o.name for o in body.outputs], {o.name: bool((o.parameters or {}).get("binary_data", default))
                                                 for o in body.outputs}
    names = [t.name for t in plan.outputs]
    return names, {n: default for n in names}


def respond(name: str, mid: str, rid, outputs: list) -> Response:
    """JSON, with the binary outputs' bytes after it. NaN and infinities have no JSON form:
    such an output must be asked for as binary data."""
    meta, blobs = [], []
    for k, arr, binary in outputs:
        entry = {"name": k, "datatype": KSERVE[arr.dtype.name], "shape": list(arr.shape)}
        if binary:
            blob = np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise HTTPException(422, f"output {k!r} holds NaN or infinite values, which JSON cannot carry: "
                                         "ask for it as binary data (parameters.binary_data = true)")
            entry["data"] = arr.reshape(-1).tolist()
        meta.append(entry)
    head = json.dumps({"model_name": name, "model_version": mid, "id": rid, "outputs": meta},
                      separators=(",", ":")).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})
