"""A servo bus's entry in a board: its joints (ids, names, register tables) and its channels,
checked at load like the rest of the board, each error at its FILE:LINE.

    [[devices]]
    name = "arm"
    driver = "feetech"                 # or "dynamixel"
    usb = { vendor = 0x1a86, product = 0x55d3 }
    servo = "sts3215"                  # or one table per joint: ["xl430-w250", …, "xl330-m288"]
    ids = [1, 2, 3, 4, 5, 6]
    names = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    baudrate = 1000000
    arm_on_start = false               # arm once every joint has been read (needs a calibration)
    fast_sync_read = false             # Dynamixel: read every joint in one status packet

Its channels are ``position`` (sensor, radians), ``goal`` (actuator, radians; failsafe
``hold`` unless the board says otherwise) and optionally ``ticks`` (sensor, the raw register
value in its integer dtype), each with one element per joint.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from .errors import ConfigError
from .registers import load

BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400, 250000, 500000, 1000000, 2000000, 3000000, 4000000)
CHANNELS = {"position": "sensor", "goal": "actuator", "ticks": "sensor"}


def _tables(vendor: str, servo, n: int, at, need) -> list:
    models = [servo] * n if isinstance(servo, str) else servo
    need(isinstance(models, list) and len(models) == n and all(isinstance(m, str) for m in models), at("servo"),
         f"servo must be a register table name (e.g. 'sts3215') or a list of {n}, one per joint; got {servo!r}")
    try:
        return [load(vendor, m) for m in models]
    except ConfigError as e:
        raise ConfigError(at("servo"), str(e).split(": ", 1)[1]) from e


def check_servo_bus(cfg, d: dict, at, need) -> None:
    """Fill ``cfg``'s servo fields from the board's entry ``d``; ``at(key)``: FILE:LINE."""
    ids, names = d.get("ids"), d.get("names")
    need(isinstance(ids, list) and ids and all(isinstance(i, int) and 0 <= i <= 252 for i in ids)
         and len(set(ids)) == len(ids), at("ids"), f"ids must be a list of distinct servo ids 0..252, got {ids!r}")
    need(isinstance(names, list) and len(names) == len(ids) and len(set(names)) == len(names)
         and all(isinstance(n, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names), at("names"),
         f"names must be {len(ids)} distinct joint names (letters, digits, '_'), one per id; got {names!r}")
    tables = _tables(cfg.driver, d.get("servo"), len(ids), at, need)
    baud = d.get("baudrate", 1_000_000)
    need(baud in BAUDRATES, at("baudrate"), f"baudrate must be one of {list(BAUDRATES)}, got {baud!r}")
    for key in ("arm_on_start", "fast_sync_read"):
        need(isinstance(d.get(key, False), bool), at(key), f"{key} must be true or false, got {d.get(key)!r}")
    need(not d.get("fast_sync_read") or cfg.driver == "dynamixel", at("fast_sync_read"),
         "fast_sync_read is a Dynamixel Protocol 2.0 instruction; a Feetech bus has none")
    cfg.servo_ids, cfg.joint_names, cfg.servo_models = list(ids), list(names), [t.model for t in tables]
    cfg.baudrate, cfg.arm_on_start, cfg.fast_sync_read = baud, d.get("arm_on_start", False), d.get("fast_sync_read", False)
    cfg.channels = [_servo_channel(c, tables[0], len(ids), names, at) for c in cfg.channels]
    have = {c.name for c in cfg.channels}
    need({"position", "goal"} <= have, at(), f"servo bus {cfg.name!r} needs a 'position' sensor and a 'goal' actuator "
         f"channel, one element per joint; it has {sorted(have) or 'none'}")


def _servo_channel(c, table, n: int, names: list[str], at):
    kind = CHANNELS.get(c.name)
    if kind is None or c.kind != kind or c.shape != (n,):
        raise ConfigError(at(), f"channel {c.name!r}: a servo bus has " + ", ".join(f"{k} ({v})" for k, v in CHANNELS.items())
                          + f", each of shape [{n}] (one per joint); got a {c.kind} {c.name!r} of shape {list(c.shape)}")
    if c.name == "ticks":
        r = table["Present_Position"]
        want = np.dtype(f"{'int' if (r.signed or r.sign_bit is not None) else 'uint'}{8 * r.size}")
        if c.dtype != want:
            raise ConfigError(at(), f"channel 'ticks': {table.model}'s Present_Position is {want}, the board says {c.dtype}")
    elif c.dtype != np.float32:
        raise ConfigError(at(), f"channel {c.name!r} is in radians (float32), the board says {c.dtype}")
    if c.names and list(c.names) != list(names):
        raise ConfigError(at(), f"channel {c.name!r}: names {list(c.names)} differ from the bus's joints {names}")
    return dataclasses.replace(c, names=tuple(names))
