"""The legacy VM: its state and channel counters, start/stop (through the supervisor's socket),
and the model proposals it left in quarantine. GET /v1/vm, POST /v1/vm/start|stop,
GET /v1/vm/proposals."""
from __future__ import annotations

import json
import os

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool

from ..deps import ask_supervisor, require_token, state

router = APIRouter(prefix="/v1/vm", tags=["legacy VM"], dependencies=[Depends(require_token)])


def _broker(st) -> dict | None:
    try:
        with open(os.path.join(st.settings.run, "broker.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@router.get("")
async def vm(st=Depends(state)):
    reply = await run_in_threadpool(ask_supervisor, st, {"cmd": "status"})
    procs = reply.get("processes", {})
    if "legacy-vm" not in procs:
        return {"configured": False, "detail": "no legacy VM on this device (NNOS_LEGACY_VM is not set)"}
    vm, broker = procs["legacy-vm"], procs.get("broker", {})
    return {"configured": True, "state": vm["state"], "pid": vm["pid"], "uptime_s": vm["uptime_s"],
            "restarts": vm["restarts"], "last_exit": vm["last_exit"], "broker": broker.get("state"),
            "channel": _broker(st), "network": "off"}


@router.post("/{action}")
async def start_stop(action: str, st=Depends(state)):
    if action not in ("start", "stop"):
        raise HTTPException(404, f"unknown action {action!r}; expected start or stop")
    reply = await run_in_threadpool(ask_supervisor, st, {"cmd": action, "name": "legacy-vm"})
    if not reply.get("ok"):
        raise HTTPException(409, reply.get("error"))
    return {"ok": True, "state": reply["process"]["state"]}


@router.get("/proposals")
def proposals(st=Depends(state)):
    """Models the VM proposed: quarantined, never active until someone here accepts and activates them."""
    q = os.path.join(st.settings.data, "quarantine")
    out = []
    for f in sorted(os.listdir(q)) if os.path.isdir(q) else []:
        if f.endswith(".json"):
            try:
                with open(os.path.join(q, f)) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                continue
    return {"proposals": sorted(out, key=lambda m: m.get("received", 0))}
