"""/metrics: the device for Prometheus — who it is (a stable device id from the data partition,
board, nnos version, root slot, active model), the loop's counters and lateness, the last
update, the data partition's room and the device's clock (services/prometheus/ alerts on these;
services/grafana/nnos.json plots them). Scraped with the API token or the read-only scrape
token (DATA/scrape_token), from NNOS_SCRAPE_FROM's address ranges only where it is set
(guard.py checks both before the route runs)."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response

from ... import __version__
from ...fsutil import atomic_write
from ...update import record
from ...identity import device_id
from ..deps import bearer_ok, require_token, state
from .device import loop_view
from .system import release

router = APIRouter(tags=["device"])
TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")             # a bearer token's characters (RFC 6750)
COUNTERS = ("ticks", "misses", "overruns", "swaps", "rollbacks", "failsafe_entries")


def require_scrape(req: Request) -> None:
    """The API token or the scrape token (which opens this route and no other)."""
    st = req.app.state.nnos
    given = req.headers.get("authorization", "")
    if not (bearer_ok(given, st.token) or (st.scrape_token and bearer_ok(given, st.scrape_token))):
        raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(require_scrape)])
def metrics(st=Depends(state)):
    """Prometheus text format (0.0.4)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, value: float, labels: dict | None = None) -> None:
        g = Gauge(name, doc, list(labels or ()), registry=reg)
        (g.labels(**labels) if labels else g).set(value)

    _identity(st, gauge)
    v = loop_view(st)
    gauge("nnos_loop_rate_hz", "the board's declared loop rate", st.board.rate_hz)
    gauge("nnos_loop_up", "1 when the loop is ticking", 0 if v["mode"] == "down" else 1)
    if v["mode"] != "down":
        for key in COUNTERS:
            gauge(f"nnos_loop_{key}", f"loop counter: {key} (since the loop started)", v[key])
        gauge("nnos_loop_failsafe", "1 while in failsafe", 1 if v["failsafe"] else 0)
        late = Gauge("nnos_loop_lateness_microseconds", "tick start lateness over the last 5 s", ["quantile"], registry=reg)
        for q in ("p50", "p99", "max"):
            late.labels(q).set(v["lateness_us"][q])
        gauge("nnos_loop_measured_rate_hz", "ticks a second over the last 5 s", v["measured_rate_hz"] or 0)
        gauge("nnos_loop_uptime_seconds", "since the loop process started", v["uptime_s"] or 0)
        gauge("nnos_model_info", "the active model and the backend it runs on", 1,
              {"model": (v["active"] or "")[:12], "backend": v["backend"] or "", "mode": v["mode"]})
    _update(st, gauge)
    disk = shutil.disk_usage(st.settings.data)
    gauge("nnos_data_size_bytes", "the data partition's size", disk.total)
    gauge("nnos_data_free_bytes", "the data partition's free bytes", disk.free)
    gauge("nnos_clock_seconds", "the device's wall clock when scraped (against the scrape's time: its drift)", time.time())
    return Response(generate_latest(reg), media_type="text/plain; version=0.0.4")


def _identity(st, gauge) -> None:
    rel = release()
    gauge("nnos_info", "this device: nnos version and board", 1, {"version": __version__, "board": st.board.name})
    gauge("nnos_device_info", "who this device is: a stable id (kept in its data partition), its host name, its "
          "board, nnos version, root slot and the compatible string of its image", 1,
          {"device_id": device_id(st.settings.data), "hostname": socket.gethostname(), "board": st.board.name,
           "version": __version__,
           "release": rel.get("version", ""), "slot": rel.get("slot", ""), "compatible": rel.get("compatible", "")})
    active = st.store.state().get("active") or ""
    gauge("nnos_store_active_info", "the model the store has active (full id)", 1, {"model": active})


def _update(st, gauge) -> None:
    rec = record.load(st.settings.data)
    state_ = rec["state"] if rec else "none"
    gauge("nnos_update_rolled_back", "1 when the last system update was rolled back", 1 if state_ == "rolled back" else 0)
    gauge("nnos_update_failed", "1 when the last system update failed to install", 1 if state_ == "failed" else 0)
    gauge("nnos_update_on_probation", "1 while a newly booted slot is on probation", 1 if state_ == "probation" else 0)


def _scrape_view(st) -> dict:
    tok = st.scrape_token
    return {"set": bool(tok), "sha256": hashlib.sha256(tok.encode()).hexdigest() if tok else None}


@router.get("/v1/system/scrape-token", dependencies=[Depends(require_token)])
def scrape_token(st=Depends(state)):
    """Whether the device has a scrape token, and its sha256 (never the token: a fleet's tooling
    compares it with the one Prometheus holds)."""
    return _scrape_view(st)


@router.put("/v1/system/scrape-token", dependencies=[Depends(require_token)])
def set_scrape_token(token: str = Body(..., embed=True, min_length=24, max_length=256), st=Depends(state)):
    """The fleet's read-only scrape token (Prometheus's credentials_file holds the same): kept
    in DATA/scrape_token (mode 0600, written whole or not at all), in force for the next scrape."""
    if not TOKEN68.fullmatch(token):
        raise HTTPException(422, "a scrape token is a bearer token: letters, digits and -._~+/ (then '=' padding) only")
    if bearer_ok(f"Bearer {token}", st.token):
        raise HTTPException(422, "the scrape token must differ from the API token (it opens /metrics alone)")
    changed = token != st.scrape_token
    if changed:
        atomic_write(os.path.join(st.settings.data, "scrape_token"), (token + "\n").encode(), mode=0o600)
        st.scrape_token = token
    return {**_scrape_view(st), "changed": changed}
