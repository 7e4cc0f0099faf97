"""The Open Inference Protocol (KServe v2) REST endpoints, so standard clients work unchanged.

A model's name is its id in the store, or "active". Inference runs in this process (off the
loop's CPU), on a plan loaded from the store, one request at a time per model.
"""
from __future__ import annotations

import threading

import numpy as np
from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

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


class RequestedOutput(BaseModel):
    name: str


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None


@health.get("/health/live")
def live():
    return {"live": True}


@health.get("/health/ready")
def ready(st=Depends(state)):
    return {"ready": bool(st.store.state()["active"])}


@router.get("")
def server_metadata():
    return {"name": "nnos", "version": __version__, "extensions": []}


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


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(name: str, body: InferRequest, version: str | None = None, st=Depends(state)):
    mid = _resolve(st, name)
    plan, lock = _plan(st, mid)
    specs = {t.name: t for t in plan.inputs}
    feeds = {}
    for t in body.inputs:
        spec = specs.get(t.name)
        if spec is None:
            raise HTTPException(400, f"unknown input {t.name!r}; the model takes {sorted(specs)}")
        dt = DTYPES.get(t.datatype)
        if dt is None or np.dtype(dt) != spec.dtype:
            raise HTTPException(400, f"input {t.name!r}: datatype {t.datatype}, expected {KSERVE[spec.dtype.name]}")
        if tuple(t.shape) != tuple(spec.shape):
            raise HTTPException(400, f"input {t.name!r}: shape {t.shape}, expected {list(spec.shape)}")
        try:
            arr = np.asarray(t.data, dtype=dt).reshape(t.shape)
        except (ValueError, TypeError) as e:
            raise HTTPException(400, f"input {t.name!r}: data does not fill shape {t.shape}: {e}") from e
        feeds[t.name] = arr
    if set(feeds) != set(specs):
        raise HTTPException(400, f"missing inputs {sorted(set(specs) - set(feeds))}")
    wanted = [o.name for o in body.outputs] if body.outputs else [t.name for t in plan.outputs]

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
    return {"model_name": name, "model_version": mid, "id": body.id,
            "outputs": [{"name": k, "datatype": KSERVE[out[k].dtype.name], "shape": list(out[k].shape),
                         "data": out[k].reshape(-1).tolist()} for k in wanted]}
