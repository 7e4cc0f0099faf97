"""The robot's arms: arming and the joints' calibration.

POST /v1/arm, POST /v1/disarm ({"device": NAME} or every device with torque) — through the
loop, which refuses to arm without a calibration or a recent reading and says which joint.
GET /v1/calibration, PUT /v1/calibration — the board's servo buses' calibration, stored
crash-safe in the data partition (hardware/calibration.py), then applied by the loop.
"""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Body, Depends, HTTPException
from pydantic import BaseModel, ConfigDict

from nnos_hardware import calibration as cal
from nnos_hardware.registers import load as load_table

from ..deps import ask_loop, disk_full, require_token, state

router = APIRouter(tags=["robot"], dependencies=[Depends(require_token)])


class Which(BaseModel):
    """Which device: one by name, or (empty) every device with torque."""
    model_config = ConfigDict(extra="forbid", strict=True)
    device: Optional[str] = None


class JointCal(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: int
    homing: int
    direction: int
    min: int
    max: int


class CalibrationDoc(BaseModel):
    """PUT /v1/calibration: {device: {joint: {id, homing, direction, min, max}}} (raw ticks)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    devices: dict[str, dict[str, JointCal]]


def resolution(dev) -> int:
    return load_table(dev.driver, dev.servo_models[0]).resolution


def _switch(st, cmd: str, body: Which) -> dict:
    r = ask_loop(st, {"cmd": cmd, **({"device": body.device} if body.device else {})})
    if not r.get("ok"):
        raise HTTPException(409, r.get("error", f"{cmd} refused"))
    return r


@router.post("/v1/arm")
def arm(body: Which = Body(Which(), examples=[{"device": "arm"}]), st=Depends(state)):
    return _switch(st, "arm", body)


@router.post("/v1/disarm")
def disarm(body: Which = Body(Which(), examples=[{}]), st=Depends(state)):
    return _switch(st, "disarm", body)


@router.get("/v1/calibration")
def get_calibration(st=Depends(state)):
    try:
        found = cal.load(st.settings.data, st.board, resolution)
    except cal.CalibrationError as e:
        raise HTTPException(409, str(e)) from e
    need = {d.name: d.joint_names for d in cal.servo_devices(st.board)}
    doc = cal.to_doc(st.board, found)
    return {"board": st.board.name, "devices": doc["devices"],
            "missing": {d: joints for d, joints in need.items() if d not in found}}


@router.put("/v1/calibration")
def put_calibration(body: CalibrationDoc, st=Depends(state)):
    try:
        found = cal.parse({"board": st.board.name, "devices": {d: {j: c.model_dump() for j, c in joints.items()}
                                                               for d, joints in body.devices.items()}},
                          st.board, resolution)
    except cal.CalibrationError as e:
        raise HTTPException(422, str(e).split(": ", 1)[1]) from e
    try:
        where = cal.save(st.settings.data, st.board, found)
    except OSError as e:
        raise disk_full(e, st.settings.data) or HTTPException(500, f"cannot store the calibration: {e}") from e
    try:
        r = ask_loop(st, {"cmd": "calibration"})
    except HTTPException:
        r = {"ok": True, "applied": [], "note": "stored; the loop is not running and reads it when it starts"}
    if not r.get("ok"):
        raise HTTPException(409, f"stored in {where}, but not applied: {r.get('error')}")
    return {"stored": where, "applied": r.get("applied", []), **({"note": r["note"]} if "note" in r else {})}
