"""/v1/models: upload (compile, verify, measure, store), list, inspect, delete, activate,
shadow, and /v1/rollback."""
from __future__ import annotations

import os
import re
import tempfile
import time

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from ...store import StoreError
from . import jobs
from ..deps import ask_loop, require_token, state
from ..intake import IntakeError, process
from ..upload import receive

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_token)])


def _summary(st, mid: str) -> dict:
    s = st.store.state()
    rep = st.store.report(mid) or {}
    role = "active" if mid == s["active"] else "previous" if mid == s["previous"] else "stored"
    return {"id": mid, "role": role, "report": rep}


@router.post("/models", status_code=201, summary="Upload an .onnx, an .onnx with external data (zip/tar), or a plan")
async def upload(req: Request, response: Response, wait: bool = True, name: str = "", st=Depends(state)):
    """The body is the file itself (any Content-Type), or a multipart/form-data form whose first
    file is the model (`curl -F file=@model.onnx`). Streamed to disk under the size cap, then
    compiled, verified on sample inputs, measured on this device and stored atomically.
    ``wait=false``: 202 at once with a job whose steps /v1/jobs/{id} reports. ``name``: what the
    dashboard and listings call it (letters, digits, ``._-``, at most 64)."""
    if name and not _NAME.fullmatch(name):
        raise HTTPException(422, f"name must be 1–64 letters, digits, '.', '_' or '-'; got {name[:80]!r}")
    extra = {"name": name} if name else {}
    limit = st.settings.max_upload_bytes
    declared = req.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload of {declared} bytes exceeds the {limit}-byte limit")
    os.makedirs(st.settings.run, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"upload-{os.getpid()}-", dir=st.settings.run)
    try:
        with os.fdopen(fd, "wb") as f:
            size = await receive(req, f, limit)
        if size == 0:
            raise HTTPException(400, "empty upload: send the model file as the request body")
        signed_by = signature_policy(st, path, req.headers.get("x-nnos-signature"))
        if not wait:
            kept, path = path, None                      # the job owns the file now
            response.status_code = 202
            return jobs.start(st, "upload", lambda job: intake_and_store(st, kept, signed_by, job, extra))
        return await intake_and_store(st, path, signed_by, None, extra)
    finally:
        if path and os.path.exists(path):
            os.unlink(path)


def signature_policy(st, path: str, signature_b64: str | None) -> str | None:
    """With the signing policy on: the name of the trusted key that signed the file at ``path``,
    else 403. Off: None (nothing checked)."""
    if not st.settings.require_signed:
        return None
    from ...signing import SignatureError, trusted_keys, verify
    with open(path, "rb") as f:
        blob = f.read()
    try:
        return verify(blob, signature_b64, trusted_keys(st.settings.data))
    except SignatureError as e:
        raise HTTPException(403, str(e)) from e


def signing_policy(st, mid: str) -> None:
    """With signed models required: 403 unless the stored model carries the device's
    countersignature (the loop checks it again before it runs the model)."""
    if not st.settings.require_signed:
        return
    from ...signing import SignatureError
    try:
        st.store.check_signed(mid)
    except SignatureError as e:
        raise HTTPException(403, str(e)) from e


async def intake_and_store(st, path: str, signed_by, job, extra: dict | None = None) -> dict:
    """The file at ``path`` (removed afterwards) through the intake (compile, verify, measure,
    check against the board) into the store — stored, not active. ``extra`` joins the report."""
    def progress(step):
        if job is not None:
            job.step = step
    try:
        async with st.intake_lock:                       # one compile at a time, off the event loop
            progress("waiting for the compiler")
            try:
                data, report = await run_in_threadpool(process, path, st.board, st.settings, progress)
            except IntakeError as e:
                raise HTTPException(e.status, e.message) from e
        if signed_by:
            report["signed_by"] = signed_by
        report.update(extra or {}, plan_bytes=len(data))
        progress("storing")
        countersigned = None
        if signed_by:                                    # the device vouches for the plan it made
            from ...signing import countersign
            countersigned = countersign(st.settings.data, data)
        kept = path if report.get("format") != "plan" else None     # to recompile it after a format change
        mid = st.store.put(data, report, countersigned, source=kept)
        return {"id": mid, "report": report}
    finally:
        if os.path.exists(path):
            os.unlink(path)


@router.get("/models")
def list_models(st=Depends(state)):
    """Every stored model (its report: name, size, latency, signature), what the loop holds now
    (``in_use``: under probation, warm, shadow) and the last activation's outcome."""
    return {"models": [_summary(st, m) for m in st.store.ids()], **{k: st.store.state()[k] for k in ("active", "previous")},
            "in_use": loop_holds(st), "last_activation": st.last_activation}


@router.get("/models/{model_id}")
def get_model(model_id: str, st=Depends(state)):
    if model_id not in st.store.ids():
        raise HTTPException(404, f"no model {model_id}")
    return _summary(st, model_id)


@router.delete("/models/{model_id}")
def delete_model(model_id: str, st=Depends(state)):
    if model_id not in st.store.ids():
        raise HTTPException(404, f"no model {model_id}")
    held = loop_holds(st)
    if model_id in held:
        raise HTTPException(409, f"model {model_id} is in use by the loop ({held[model_id]}): "
                                 "wait for its activation to end, or stop its shadow run, before deleting it")
    try:
        st.store.delete(model_id)
    except StoreError as e:
        raise HTTPException(409, str(e)) from e
    return {"deleted": model_id}


def loop_holds(st) -> dict:
    """The models the running loop holds (active, under probation, warm, shadow) and why; none
    when no loop runs."""
    try:
        return ask_loop(st, {"cmd": "status"}, 5.0).get("in_use") or {}
    except HTTPException:
        return {}


async def ask_activate(st, model_id: str, probation_s: float) -> dict:
    """The loop's answer to an activation; its outcome (or why the loop was not asked) is kept
    as the last activation, which /v1/models and the dashboard show."""
    last = st.last_activation = {"model": model_id, "ok": False, "outcome": "no answer", "reason": None,
                                 "at": time.time()}
    try:
        reply = await run_in_threadpool(ask_loop, st, {"cmd": "activate", "model": model_id, "probation_s": probation_s},
                                        st.settings.activate_timeout_s)
    except HTTPException as e:
        last["reason"] = e.detail
        raise
    last.update(ok=bool(reply.get("ok")), outcome=reply.get("outcome"), reason=reply.get("reason") or reply.get("error"))
    return reply


@router.post("/models/{model_id}/activate")
async def activate(model_id: str, response: Response, probation_s: float = 2.0, wait: bool = True,
                   st=Depends(state)):
    """Admission on the device, a hitless swap, probation; answers with the outcome
    (``wait=false``: 202 with a job to follow)."""
    if model_id not in st.store.ids():
        raise HTTPException(404, f"no model {model_id}")
    signing_policy(st, model_id)
    if not 0 <= probation_s <= 600:
        raise HTTPException(422, "probation_s must be between 0 and 600")

    async def go(job):
        if job is not None:
            job.step = "admission, swap and probation on the loop"
        reply = await ask_activate(st, model_id, probation_s)
        if not reply.get("ok"):
            raise HTTPException(409, {"outcome": reply.get("outcome"),
                                      "reason": reply.get("reason") or reply.get("error"), "latency": reply.get("latency")})
        return reply
    if not wait:
        response.status_code = 202
        return jobs.start(st, "activate", go)
    return await go(None)


@router.post("/models/{model_id}/shadow")
async def shadow(model_id: str, st=Depends(state)):
    if model_id not in st.store.ids():
        raise HTTPException(404, f"no model {model_id}")
    reply = await run_in_threadpool(ask_loop, st, {"cmd": "shadow", "model": model_id}, 30.0)
    if not reply.get("ok"):
        raise HTTPException(409, reply.get("reason") or reply.get("error"))
    return reply


@router.delete("/shadow")
async def stop_shadow(st=Depends(state)):
    return await run_in_threadpool(ask_loop, st, {"cmd": "shadow", "model": None})


@router.post("/rollback")
async def rollback(st=Depends(state)):
    prev = st.store.state()["previous"]
    if not prev:
        raise HTTPException(409, "no previous model to roll back to")
    signing_policy(st, prev)
    reply = await ask_activate(st, prev, 2.0)
    if not reply.get("ok"):
        raise HTTPException(409, {"outcome": reply.get("outcome"), "reason": reply.get("reason") or reply.get("error")})
    return reply

