"""Joint calibration of a board's servo buses, kept crash-safe in the data partition.

Per joint: the servo's id, ``homing`` (the raw tick that is 0 rad), ``direction`` (+1, or −1
when the servo turns against the joint's positive sense) and ``min``/``max`` (the raw ticks the
joint may reach). radians = (ticks − homing) · direction · 2π / resolution.

One file per board: ``<data>/calibration/<board>.json`` = {"board", "devices": {device: {joint:
{id, homing, direction, min, max}}}, "sha256"} — written atomically (temp file, fsync, rename),
its checksum over the canonical JSON of everything else, so a torn or edited file is refused
("corrupt"), and one recorded for another board (another name, other joints or ids) too.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from nnos.digest import sha256
from nnos.fsutil import atomic_write

from .errors import ConfigError

SERVO_DRIVERS = ("feetech", "dynamixel")


class CalibrationError(ConfigError):
    """A calibration that is missing, corrupt, or does not fit the board."""


@dataclass(frozen=True)
class JointCalibration:
    id: int
    homing: int
    direction: int
    min: int
    max: int

    def to_rad(self, ticks: float, resolution: int) -> float:
        return (ticks - self.homing) * self.direction * 6.283185307179586 / resolution


def path(data_dir: str, board) -> str:
    return os.path.join(data_dir, "calibration", f"{board.name}.json")


def servo_devices(board) -> list:
    return [d for d in board.devices if d.driver in SERVO_DRIVERS]


def _digest(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _int(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CalibrationError("calibration", f"{what} must be a whole number, got {value!r}")
    return value


def _joint(device, name: str, raw, resolution: int) -> JointCalibration:
    where = f"{device.name}.{name}"
    if not isinstance(raw, dict) or set(raw) != {"id", "homing", "direction", "min", "max"}:
        raise CalibrationError("calibration", f"joint {where} needs exactly id, homing, direction, min, max; "
                               f"got {sorted(raw) if isinstance(raw, dict) else raw!r}")
    j = JointCalibration(*(_int(raw[k], f"{where}.{k}") for k in ("id", "homing", "direction", "min", "max")))
    want = device.servo_ids[device.joint_names.index(name)]
    if j.id != want:
        raise CalibrationError("calibration", f"joint {where} was calibrated on servo {j.id}; the board has servo {want} "
                               "there (a calibration of another arm?)")
    if j.direction not in (1, -1):
        raise CalibrationError("calibration", f"{where}.direction must be 1 or -1, got {j.direction}")
    if not 0 <= j.min < j.max < resolution:
        raise CalibrationError("calibration", f"{where}: min {j.min} and max {j.max} must satisfy 0 ≤ min < max < "
                               f"{resolution} (ticks)")
    if not -resolution < j.homing < 2 * resolution:
        raise CalibrationError("calibration", f"{where}.homing {j.homing} is not a tick of this servo")
    return j


def parse(doc, board, resolution_of) -> dict[str, dict[str, JointCalibration]]:
    """A calibration document checked against ``board`` → {device: {joint: JointCalibration}}.
    ``resolution_of(device_config)`` gives the ticks per turn. Devices may be left out (not
    calibrated yet); a device given must name every one of its joints."""
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), dict):
        raise CalibrationError("calibration", "expected {\"board\": NAME, \"devices\": {DEVICE: {JOINT: {...}}}}")
    if doc.get("board") != board.name:
        raise CalibrationError("calibration", f"recorded for board {doc.get('board')!r}, this board is {board.name!r}")
    servos = {d.name: d for d in servo_devices(board)}
    out = {}
    for dev_name, joints in doc["devices"].items():
        dev = servos.get(dev_name)
        if dev is None:
            raise CalibrationError("calibration", f"device {dev_name!r} is not a servo bus of board {board.name!r} "
                                   f"(its servo buses: {', '.join(servos) or 'none'})")
        if not isinstance(joints, dict) or sorted(joints) != sorted(dev.joint_names):
            got = sorted(joints) if isinstance(joints, dict) else joints
            raise CalibrationError("calibration", f"device {dev_name!r} has joints {dev.joint_names}, the calibration "
                                   f"gives {got!r}")
        out[dev_name] = {n: _joint(dev, n, joints[n], resolution_of(dev)) for n in dev.joint_names}
    return out


def to_doc(board, cal: dict[str, dict[str, JointCalibration]]) -> dict:
    doc = {"board": board.name, "devices": {d: {j: asdict(c) for j, c in joints.items()} for d, joints in cal.items()}}
    doc["sha256"] = _digest(doc)
    return doc


def load(data_dir: str, board, resolution_of) -> dict[str, dict[str, JointCalibration]]:
    """The stored calibration ({} when there is none yet)."""
    p = path(data_dir, board)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationError(p, f"corrupt: not JSON ({e}); calibrate again (nnos calibrate or PUT /v1/calibration)") from e
    if not isinstance(doc, dict) or doc.get("sha256") != _digest(doc):
        raise CalibrationError(p, "corrupt: its checksum does not match its contents; calibrate again")
    try:
        return parse(doc, board, resolution_of)
    except CalibrationError as e:
        raise CalibrationError(p, str(e).split(": ", 1)[1]) from e


def save(data_dir: str, board, cal: dict[str, dict[str, JointCalibration]]) -> str:
    """Replace the stored calibration with ``cal`` merged over it (devices not in ``cal`` keep theirs)."""
    p = path(data_dir, board)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    try:
        old = load(data_dir, board, lambda d: 1 << 30)
    except CalibrationError:
        old = {}                                          # a corrupt one is replaced
    atomic_write(p, json.dumps(to_doc(board, {**old, **cal}), indent=1, sort_keys=True).encode())
    return p
