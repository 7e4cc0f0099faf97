"""Recordings of the live loop as MCAP (nnos/recorder.py), made by the control plane's own
thread from the loop's shared memory — never on the loop's CPU, never touching the loop.

POST /v1/recordings {"seconds": N, "channels": [...]} starts one (202; one at a time), GET
/v1/recordings lists them, GET /v1/recordings/{id} downloads one (a recording still being
made: 409), DELETE /v1/recordings/{id} removes one (one being made is stopped first). All of
them together stay within NNOS_RECORDINGS_MAX_MB: a start that finds it full is a 507, and a
recording that would pass it ends there (its end says "quota").
"""
from __future__ import annotations

import os
import re
import threading
import time
from typing import Optional

from fastapi import APIRouter, Body, Depends, HTTPException, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from ... import flags
from ...recorder import record
from ..deps import require_token, state

router = APIRouter(prefix="/v1/recordings", tags=["recordings"], dependencies=[Depends(require_token)])
_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
_active: dict = {}                    # id → {"thread", "stop", "progress", "result"}
_lock = threading.Lock()


class Start(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seconds: float = Field(gt=0, le=3600)
    channels: Optional[list[str]] = None


def _dir(st) -> str:
    d = os.path.join(st.settings.data, "recordings")
    os.makedirs(d, exist_ok=True)
    return d


def _path(st, rid: str) -> str:
    if not _ID.match(rid):
        raise HTTPException(404, f"no recording {rid!r} (ids look like 20261203-181500-a1b2c3)")
    p = os.path.join(_dir(st), rid + ".mcap")
    if not os.path.exists(p):
        raise HTTPException(404, f"no recording {rid!r}")
    return p


def _used(st) -> int:
    d = _dir(st)
    return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".mcap"))


@router.post("", status_code=202)
def start(body: Start = Body(..., examples=[{"seconds": 10}]), st=Depends(state)):
    quota = flags.RECORDINGS_MAX_MB.get() * 1e6
    left = quota - _used(st)
    if left < 1e6:
        raise HTTPException(507, f"the recordings take {_used(st) / 1e6:.1f} MB of their {quota / 1e6:.0f} MB "
                                 "(NNOS_RECORDINGS_MAX_MB): delete some first")
    run = st.settings.run
    if not os.path.exists(os.path.join(run, "channels")):
        raise HTTPException(409, "the loop is not running (no channel ring to record)")
    with _lock:
        if any(r["thread"].is_alive() for r in _active.values()):
            raise HTTPException(409, "a recording is being made; one at a time")
        rid = time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex()
        out = os.path.join(_dir(st), rid + ".mcap")
        entry = {"stop": threading.Event(), "progress": {"ticks": 0, "bytes": 0}, "result": None, "started": time.time()}

        def run_it():
            try:
                entry["result"] = record(run, out, body.seconds, body.channels, stop=entry["stop"], max_bytes=left,
                                         progress=entry["progress"].update, board_path=st.settings.board_path)
            except (ValueError, OSError) as e:
                entry["result"] = {"end": "failed", "error": str(e)}
        entry["thread"] = threading.Thread(target=run_it, name=f"record-{rid}", daemon=True)
        open(out, "wb").close()                  # listed, refused for download and deletable from now on
        _active[rid] = entry
        entry["thread"].start()
    return {"id": rid, "seconds": body.seconds, "state": "recording"}


def _view(st, name: str) -> dict:
    rid = name[:-5]
    entry = _active.get(rid)
    busy = entry is not None and entry["thread"].is_alive()
    out = {"id": rid, "bytes": os.path.getsize(os.path.join(_dir(st), name)), "state": "recording" if busy else "done"}
    if entry is not None:
        out.update(started=entry["started"], **(entry["result"] or entry["progress"]))
        out.pop("path", None)
    return out


@router.get("")
def listing(st=Depends(state)):
    names = sorted(n for n in os.listdir(_dir(st)) if n.endswith(".mcap") and _ID.match(n[:-5]))
    return {"recordings": [_view(st, n) for n in names], "used_bytes": _used(st),
            "quota_bytes": int(flags.RECORDINGS_MAX_MB.get() * 1e6)}


@router.get("/{rid}")
def download(rid: str, st=Depends(state)):
    entry = _active.get(rid)
    if entry is not None and entry["thread"].is_alive():
        raise HTTPException(409, f"recording {rid} is still being made")
    p = _path(st, rid)
    return FileResponse(p, media_type="application/octet-stream", filename=rid + ".mcap")


@router.delete("/{rid}", status_code=204)
def delete(rid: str, st=Depends(state)):
    p = _path(st, rid)
    entry = _active.pop(rid, None)
    if entry is not None:
        entry["stop"].set()
        entry["thread"].join(10)
    os.unlink(p)
    return Response(status_code=204)
