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
