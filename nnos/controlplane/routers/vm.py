"""The legacy VM: its state and channel counters, start/stop and its network switch (through
the supervisor's socket), its settings, and the model proposals it left in quarantine — which
only a local accept takes into the store (the same checks as an upload, the signing policy
included) and only a local activation makes active.

GET /v1/vm, POST /v1/vm/start|stop, POST /v1/vm/network, GET|PUT /v1/vm/settings,
GET /v1/vm/proposals, POST /v1/vm/proposals/{id}/accept, DELETE /v1/vm/proposals/{id}.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
from typing import Optional

from fastapi import APIRouter, Body, Depends, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ...legacy import netns
from ...legacy import settings as vm_settings
from ...legacy.broker import Audit
from ..deps import ask_supervisor, require_token, state
from .models import intake_and_store, signature_policy

router = APIRouter(prefix="/v1/vm", tags=["legacy VM"], dependencies=[Depends(require_token)])
_ID = re.compile(r"^[0-9a-f]{64}$")


class NetworkSwitch(BaseModel):
    """POST /v1/vm/network: cut or restore the guest's outside network."""
    model_config = ConfigDict(extra="forbid", strict=True)
    enabled: bool


class SettingsChange(BaseModel):
    """PUT /v1/vm/settings: the settings to change (the rest stay). Shapes are checked here;
    ranges and URLs by the legacy VM's own settings (the one place they are defined)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    agents: Optional[list[str]] = None
    telemetry_url: Optional[str] = None
    offer_url: Optional[str] = None
    probe_urls: Optional[list[str]] = None
    interval_s: Optional[int] = None
    cpu_percent: Optional[int] = None
    memory_mb: Optional[int] = None
    watchdog_s: Optional[int] = None
    start_grace_s: Optional[int] = None
    network: Optional[bool] = Field(None, description="not here: POST /v1/vm/network")


def _broker(st) -> dict | None:
    try:
        with open(os.path.join(st.settings.run, "broker.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def network_state() -> dict:
    """What the switch is now: on/off, or off with why there is no network at all."""
    s = netns.state()
    return {"network": s} if s in ("on", "off") else {"network": "off", "network_detail": s}


@router.get("")
async def vm(st=Depends(state)):
    reply = await run_in_threadpool(ask_supervisor, st, {"cmd": "status"})
    procs = reply.get("processes", {})
    if not procs.get("legacy-vm", {}).get("enabled"):           # in the table, but not set up here
        return {"configured": False, "detail": "no legacy VM on this device (NNOS_LEGACY_VM is not set)"}
    vm, broker = procs["legacy-vm"], procs.get("broker", {})
    return {"configured": True, "state": vm["state"], "pid": vm["pid"], "uptime_s": vm["uptime_s"],
            "restarts": vm["restarts"], "last_exit": vm["last_exit"], "broker": broker.get("state"),
            "channel": _broker(st), **network_state(),
            "network_setting": "on" if vm_settings.load(st.settings.data)["network"] else "off"}


@router.post("/network")
async def network(body: NetworkSwitch = Body(..., examples=[{"enabled": False}]), st=Depends(state)):
    """Cut (``{"enabled": false}``) or restore its outside network, at once and for its next starts."""
    reply = await run_in_threadpool(ask_supervisor, st, {"cmd": "vm.network", "enabled": body.enabled})
    if not reply.get("ok"):
        raise HTTPException(409, reply.get("error"))
    return {"ok": True, **network_state()}


@router.get("/settings")
def get_settings(st=Depends(state)):
    return vm_settings.load(st.settings.data)


@router.put("/settings")
def put_settings(body: SettingsChange = Body(..., examples=[{"telemetry_url": "https://vendor.example/t",
                                                              "interval_s": 60}]), st=Depends(state)):
    """Change some settings (the rest stay); they apply at the VM's next start
    (POST /v1/vm/stop then /start). The network has its own switch: POST /v1/vm/network."""
    body = body.model_dump(exclude_unset=True)
    if "network" in body:
        raise HTTPException(400, "the network is switched with POST /v1/vm/network, not here")
    try:
        return vm_settings.save(st.settings.data, **body)
    except vm_settings.SettingsError as e:
        raise HTTPException(400, str(e)) from e


@router.post("/{action}")
async def start_stop(action: str, st=Depends(state)):
    if action not in ("start", "stop"):
        raise HTTPException(404, f"unknown action {action!r}; expected start, stop or network")
    reply = await run_in_threadpool(ask_supervisor, st, {"cmd": action, "name": "legacy-vm"})
    if not reply.get("ok"):
        raise HTTPException(409, reply.get("error"))
    return {"ok": True, "state": reply["process"]["state"]}


def _quarantine(st) -> str:
    return os.path.join(st.settings.data, "quarantine")


def _proposal(st, pid: str) -> dict:
    if not _ID.match(pid):
        raise HTTPException(400, f"a proposal id is 64 hex digits (its sha256), got {pid!r}")
    try:
        with open(os.path.join(_quarantine(st), pid + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise HTTPException(404, f"no proposal {pid} in quarantine") from e


@router.get("/proposals")
def proposals(st=Depends(state)):
    """Models the VM proposed: quarantined, never active until someone here accepts and activates them."""
    q = _quarantine(st)
    out = []
    for f in sorted(os.listdir(q)) if os.path.isdir(q) else []:
        if f.endswith(".json"):
            try:
                with open(os.path.join(q, f)) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                continue
    return {"proposals": sorted(out, key=lambda m: m.get("received", 0))}


@router.post("/proposals/{pid}/accept", status_code=201)
async def accept(pid: str, st=Depends(state)):
    """Take a proposal into the store through the upload's checks (compile, verify on sample
    inputs, measure, fit the board; with the signing policy on, a trusted signature). It is
    stored, not active: POST /v1/models/{id}/activate is a separate, local decision."""
    meta = _proposal(st, pid)
    q = _quarantine(st)
    sig = None
    if os.path.exists(os.path.join(q, pid + ".sig")):
        with open(os.path.join(q, pid + ".sig"), "rb") as f:
            sig = base64.b64encode(f.read()).decode()
    audit = Audit(st.settings.data)
    try:
        signed_by = signature_policy(st, os.path.join(q, pid + ".model"), sig)
        os.makedirs(st.settings.run, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"proposal-{os.getpid()}-", dir=st.settings.run)
        os.close(fd)
        shutil.copyfile(os.path.join(q, pid + ".model"), path)       # the intake consumes its file
        out = await intake_and_store(st, path, signed_by, None,
                                     {"proposed_by": "legacy-vm", "proposal": {k: meta.get(k) for k in
                                                                               ("id", "name", "note", "received")}})
    except HTTPException as e:
        audit.write(by="control-plane", type="proposal.accept", ok=False, proposal=pid, code=e.status_code,
                    detail=str(e.detail)[:500])
        raise
    for ext in (".model", ".sig", ".json"):
        if os.path.exists(os.path.join(q, pid + ext)):
            os.unlink(os.path.join(q, pid + ext))
    audit.write(by="control-plane", type="proposal.accept", ok=True, proposal=pid, model=out["id"])
    return {"id": out["id"], "report": out["report"], "active": False,
            "note": f"stored; POST /v1/models/{out['id']}/activate makes it active"}


@router.delete("/proposals/{pid}", status_code=204)
def reject(pid: str, st=Depends(state)):
    _proposal(st, pid)
    for ext in (".model", ".sig", ".json"):
        p = os.path.join(_quarantine(st), pid + ext)
        if os.path.exists(p):
            os.unlink(p)
    Audit(st.settings.data).write(by="control-plane", type="proposal.reject", ok=True, proposal=pid)
    return Response(status_code=204)
