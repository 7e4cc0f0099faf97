"""The last update, kept in the data partition (DATA/update.json, written atomically): what was
installed from where to where, and where it stands —

    installing → installed (reboot to use it) → probation (the new slot booted) → good
                                               ↘ rolled back (why)      failed (why)

Both slots read and write it: the old slot reports a rollback the new one could not."""
from __future__ import annotations

import json
import os
import time

from ..fsutil import atomic_write

NAME = "update.json"
STATES = ("installing", "installed", "probation", "good", "rolled back", "failed")


def path(data: str) -> str:
    return os.path.join(data, NAME)


def load(data: str) -> dict | None:
    try:
        with open(path(data)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("state") in STATES else None


def save(data: str, rec: dict) -> dict:
    rec = dict(rec, updated_at=time.time())
    atomic_write(path(data), json.dumps(rec, indent=1).encode())
    return rec


def change(data: str, state: str, **fields) -> dict:
    """The record moved to ``state`` with ``fields`` added (a new record if there is none)."""
    assert state in STATES, state
    return save(data, dict(load(data) or {}, state=state, **fields))


def summary(rec: dict | None) -> str | None:
    """One line for /v1/status: ``last_update: rolled back because …``."""
    if not rec:
        return None
    to = rec.get("to", {})
    what = f"{to.get('version', '?')} into slot {to.get('slot', '?')}"
    if rec["state"] in ("rolled back", "failed"):
        return f"{rec['state']} because {rec.get('why', 'no reason recorded')} ({what})"
    if rec["state"] == "probation":
        return f"on probation: {what} must run healthy for {rec.get('probation_s', '?')} s before it is kept"
    return f"{rec['state']}: {what}"


# --- this boot's verdict ------------------------------------------------------------------------
VERDICT = "update-verdict"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id(path_: str = BOOT_ID) -> str:
    try:
        with open(path_) as f:
            return f.read().strip()
    except OSError:
        return ""


def judge(run: str, verdict: str, boot: str | None = None) -> None:
    """The health gate's verdict on this boot ("committed", "good", "rolled back"), in RUN."""
    os.makedirs(run, exist_ok=True)
    body = {"boot_id": boot_id() if boot is None else boot, "verdict": verdict, "at": time.time()}
    atomic_write(os.path.join(run, VERDICT), json.dumps(body).encode())


def judged(run: str, boot: str | None = None) -> str | None:
    """This boot's verdict, or None while the health gate has not given one (a verdict of an
    earlier boot does not count)."""
    try:
        with open(os.path.join(run, VERDICT)) as f:
            body = json.load(f)
    except (OSError, ValueError):
        return None
    return body.get("verdict") if body.get("boot_id") == (boot_id() if boot is None else boot) else None


def interrupted(data: str) -> dict | None:
    """An install that never finished (the power went, the device rebooted): failed, with why —
    RAUC had taken the slot out of the boot order before it wrote it, so nothing boots it."""
    rec = load(data)
    if rec is None or rec["state"] != "installing":
        return None
    return change(data, "failed", why=f"the install into slot {rec.get('to', {}).get('slot', '?')} was cut off "
                                       "(a power cut or reboot during it); the slot was not used", at=time.time())
