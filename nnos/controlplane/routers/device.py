"""Device state: /v1/status, /v1/devices, /v1/logs, /v1/config."""
from __future__ import annotations

import asyncio
import os
import time

import numpy as np

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from ...telemetry import MAX_IO
from ...timing import percentiles
from ..deps import ask_init, ask_loop, require_token, state, telemetry, ws_token_ok
from .system import summary as update_summary

router = APIRouter(tags=["device"], dependencies=[Depends(require_token)])


def loop_view(st) -> dict:
    r = telemetry(st)
    if r is None:
        return {"mode": "down", "detail": "the loop has not started"}
    try:
        c = r.counters()
        period = max(1, c["period_ns"])
        recs = r.records(int(1e9 // period) * 5)
        shadow = r.shadow_divergence()
    finally:
        r.close()
    late = recs["lateness_ns"] / 1000.0 if len(recs) else np.zeros(1)
    span = (int(recs["t_ns"][-1]) - int(recs["t_ns"][0])) / 1e9 if len(recs) > 1 else 0
    hb_age = (time.monotonic_ns() - c["heartbeat_ns"]) / 1e9 if c["heartbeat_ns"] else None
    return {
        "mode": c["mode"] if hb_age is not None and hb_age < 1.0 else "down",
        "failsafe": c["mode"] == "failsafe", "failsafe_reason": c["failsafe_reason"] or None,
        "last_failsafe_reason": c["last_failsafe_reason"] or None,
        "active": c["active"] or None, "previous": c["previous"] or None, "shadow": c["shadow"] or None,
        "backend": c["backend"] or None,
        "shadow_divergence": shadow if c["shadow"] else None,
        "rate_hz": c["rate_mhz"] / 1000.0, "measured_rate_hz": round((len(recs) - 1) / span, 2) if span else None,
        "lateness_us": {**percentiles(late), "max": float(late.max())},
        "ticks": c["ticks"], "misses": c["misses"], "overruns": c["overruns"], "swaps": c["swaps"],
        "rollbacks": c["rollbacks"], "failsafe_entries": c["failsafe_entries"],
        "uptime_s": round((time.monotonic_ns() - c["started_ns"]) / 1e9, 1) if c["started_ns"] else None,
        "heartbeat_age_s": hb_age, "pid": c["pid"],
    }


@router.get("/v1/status")
def status(st=Depends(state)):
    return {"loop": loop_view(st), "store": {k: st.store.state()[k] for k in ("active", "previous")},
            "board": {"name": st.board.name, "rate_hz": st.board.rate_hz}, "gpu": _gpu(st),
            "update": update_summary(st), "boot_config": _boot_config(st)}


def _boot_config(st) -> dict:
    """What init made of the config files put on the boot partition, per file: imported, refused
    or unknown, and why (kept beside the board config as boot-config.json by
    nnos/boot/bootconfig.py); {} when none were ever put there."""
    import json
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(st.settings.board_path)), "boot-config.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return {name: {"result": r.get("result"), "why": r.get("why")} for name, r in record.items()
            if isinstance(r, dict)} if isinstance(record, dict) else {}


def _gpu(st) -> dict:
    """The Vulkan device and driver (or why there is none), found once per control plane;
    `nnos gpu-check` runs the test vectors and the timing."""
    if st.gpu is None:
        from ...backends.vulkan.check import describe
        try:
            st.gpu = describe()
        except Exception as e:                        # noqa: BLE001 - a broken driver is said, never a 500
            st.gpu = {"available": False, "why": f"{type(e).__name__}: {e}"}
        st.gpu.pop("limits", None)
    return st.gpu


@router.get("/v1/devices")
def devices(st=Depends(state)):
    try:
        loop = ask_loop(st, {"cmd": "status"}, 5.0)
    except HTTPException:
        loop = None                                   # the loop is down: devices are listed anyway
    out = []
    for d in st.board.devices:
        live = (loop or {}).get("devices", {}).get(d.name, {})
        ch_live = live.get("channels", {})
        out.append({"name": d.name, "driver": d.driver, "lost": None if loop is None else d.name in loop.get("lost", []),
                    "open": live.get("open"), "armed": live.get("armed"), "state": live.get("state"),
                    "faults": live.get("faults"),
                    "find": {"path": d.path, "usb": d.usb or None, "simulator": d.simulator},
                    **({"joints": dict(zip(d.joint_names, d.servo_ids))} if d.joint_names else {}),
                    "channels": [{"name": c.name, "kind": c.kind, "shape": list(c.shape), "range": [c.lo, c.hi],
                                  "units": c.units, "names": list(c.names) or None, "dtype": str(c.dtype),
                                  **({"failsafe": c.failsafe, "max_rate": c.max_rate} if c.kind == "actuator" else {}),
                                  **({"safe": c.safe} if c.kind == "actuator" else {
                                      "stale_ms": d.stale_ms.get(c.name), **ch_live.get(c.name, {}),
                                      "stale": (ch_live.get(c.name, {}).get("age_s") or 1e9) * 1000 > d.stale_ms.get(c.name, 0)
                                      if loop is not None else None})} for c in d.channels]})
    return {"devices": out}


@router.get("/v1/logs")
def logs(process: str = "loop", lines: int = 200, st=Depends(state)):
    if not process.replace("-", "").isalnum():
        raise HTTPException(400, "process must be a process-table name")
    path = os.path.join(st.settings.logs, f"{process}.log")
    if not os.path.exists(path):
        names = sorted(n[:-4] for n in os.listdir(st.settings.logs) if n.endswith(".log")) \
            if os.path.isdir(st.settings.logs) else []
        raise HTTPException(404, f"no log for {process!r}; logs exist for: {', '.join(names) or 'none yet'}")
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 256 * 1024))
        text = f.read().decode(errors="replace").splitlines()
    return {"process": process, "lines": text[-max(1, min(lines, 5000)):]}


@router.get("/v1/config")
def config(st=Depends(state)):
    b = st.board
    return {"board": b.name, "path": b.path, "rate_hz": b.rate_hz, "failsafe": b.failsafe,
            "inputs": [{"tensor": i.tensor, "channels": [f"{d}.{c}" for d, c in i.channels],
                        "scale": i.scale.tolist(), "offset": i.offset.tolist()} for i in b.inputs],
            "outputs": [{"tensor": o.tensor, "channel": f"{o.device}.{o.channel}", "scale": o.scale.tolist(),
                         "offset": o.offset.tolist(), "clamp": [o.lo, o.hi], "max_step": o.max_step} for o in b.outputs]}


ws_router = APIRouter(tags=["device"])


@ws_router.websocket("/v1/telemetry")
async def telemetry_stream(ws: WebSocket, hz: float = 10.0):
    """Decimated tick records at ``hz`` (0.1–100) per second. The token comes as the
    Authorization header or, for browsers, the ``token`` query parameter."""
    st = ws.app.state.nnos
    if not ws_token_ok(ws, st.token):
        await ws.close(code=1008)
        return
    await ws.accept()
    hz = min(max(hz, 0.1), 100.0)
    last = None
    names = st.board.labels(MAX_IO)           # what each input and output element is (joint names)
    try:
        while True:
            r = telemetry(st)
            if r is None:
                await ws.send_json({"mode": "down"})
            else:
                try:
                    c = r.counters()
                    recs = r.records(1)
                finally:
                    r.close()
                if len(recs) and recs["tick"][0] != last:
                    x = recs[0]
                    last = x["tick"]
                    await ws.send_json({"tick": int(x["tick"]), "mode": c["mode"], "lateness_us": int(x["lateness_ns"]) / 1000,
                                        "compute_us": int(x["compute_ns"]) / 1000,
                                        "inputs": x["inputs"][:int(x["n_in"])].tolist(),
                                        "outputs": x["outputs"][:int(x["n_out"])].tolist(),
                                        "failsafe_reason": c["failsafe_reason"] or None, "active": c["active"],
                                        "names": names})
            await asyncio.sleep(1.0 / hz)
    except WebSocketDisconnect:
        return


@router.post("/v1/device/{action}", status_code=202)
def power(action: str):
    """Reboot or power off the device (``reboot`` | ``poweroff``): the supervisor stops the
    loop first (actuators to their safe values), then everything else, syncs the data
    partition and restarts or halts. Only on the appliance, where the supervisor is init."""
    if action not in ("reboot", "poweroff"):
        raise HTTPException(404, f"unknown device action {action!r}; expected reboot or poweroff")
    ask_init(action)
    return JSONResponse({"ok": True, "action": action}, status_code=202)



def _default_fits(board, at: str) -> str | None:
    """A board the active model does not fit is taken at the next start if its own default
    model compiles and fits it (the supervisor provisions that one then); what to tell, or None."""
    from nnos_hardware.errors import ConfigError

    from ...compiler import compile
    from ...errors import NnosError
    if at != "next-start" or not board.model or not os.path.exists(board.model):
        return None
    try:
        board.check_plan(compile(board.model, check=False, images=board.plan_images()))
    except (ConfigError, NnosError):
        return None
    return f"the active model does not fit it: its default model {os.path.basename(board.model)} is provisioned then"


@router.put("/v1/config")
async def put_config(req: Request, at: str = "now", st=Depends(state)):
    """Replace the board config (TOML as the body). Validated first — syntax, every field, the
    active model's tensors — then written atomically and applied by the loop at a tick
    boundary (``at=now``), or only written, to apply at the next start (``at=next-start``: for
    changes the running loop cannot take, such as other devices). A bad config: 422 naming
    FILE:LINE and the field; nothing changes."""
    if at not in ("now", "next-start"):
        raise HTTPException(422, f"at must be 'now' or 'next-start', got {at!r}")
    from fastapi.concurrency import run_in_threadpool

    from nnos_hardware.board import load_board
    from nnos_hardware.errors import ConfigError

    from ...fsutil import atomic_write
    body = await req.body()
    if len(body) > 256 * 1024:
        raise HTTPException(413, "a board config is at most 256 KiB")
    path = st.settings.board_path          # not st.board.path: a board read from the candidate file names it
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".candidate-" + os.path.basename(path))
    try:
        with open(tmp, "wb") as f:
            f.write(body)
        try:
            board = load_board(tmp)
        except ConfigError as e:
            raise HTTPException(422, str(e).replace(tmp, os.path.basename(path))) from e
        active = st.store.state()["active"]
        note = None
        if active:
            try:
                board.check_plan(st.store.load(active))
            except ConfigError as e:
                note = await run_in_threadpool(_default_fits, board, at)      # another robot: its own model
                if note is None:
                    raise HTTPException(422, f"does not fit the active model: {str(e).replace(tmp, os.path.basename(path))}"
                                        + ("" if at == "next-start" else "; a board for another robot applies at=next-start "
                                           "with a default model that fits it")) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    old = open(path, "rb").read()
    atomic_write(path, body)
    if at == "next-start":
        return {"ok": True, "board": board.name, "rate_hz": board.rate_hz,
                "note": "written; applies when the supervisor next starts (reboot the device)" + (f"; {note}" if note else "")}
    try:
        reply = await run_in_threadpool(ask_loop, st, {"cmd": "reload_board"}, 30.0)
    except HTTPException:
        reply = {"ok": True, "note": "the loop is not running: the new config applies when it starts"}
    if not reply.get("ok"):
        atomic_write(path, old)                       # the loop refused it: the old file stays
        raise HTTPException(422, reply.get("reason"))
    st.board = load_board(path)
    return {"ok": True, "board": board.name, "rate_hz": board.rate_hz, **{k: v for k, v in reply.items() if k == "note"}}
