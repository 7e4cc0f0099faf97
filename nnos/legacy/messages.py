"""The legacy VM's only channel to the host: newline-delimited JSON, one request per line, one
answer per request. The message types are an allow-list; each has a schema checked field by
field. Nothing here can touch actuators, the loop, the board config or the model store: the
strongest thing a guest can do is put a model proposal into quarantine.

Request:  {"id": 7, "type": "status.get"}
Answer:   {"id": 7, "ok": true, "result": {...}}  |  {"id": 7, "ok": false, "error": {"code": ..., "message": ...}}
"""
from __future__ import annotations

import base64
import binascii
import re

MAX_LINE = 64 * 1024                  # any message but a model proposal
MAX_PROPOSAL_LINE = 12 * 1024 * 1024  # a proposal carries the model, base64 (≈ 9 MB of model)
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class MessageError(Exception):
    """A refused message: ``code`` is machine-readable, the text says what was expected."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _fields(msg: dict, allowed: set[str], required: set[str]) -> None:
    unknown = set(msg) - allowed - {"id", "type"}
    if unknown:
        raise MessageError("schema", f"unknown fields {sorted(unknown)} for {msg['type']!r}; allowed {sorted(allowed)}")
    missing = required - set(msg)
    if missing:
        raise MessageError("schema", f"{msg['type']!r} needs {sorted(missing)}")


def _status(msg):
    _fields(msg, set(), set())
    return {}


def _telemetry(msg):
    _fields(msg, {"window_s"}, set())
    w = msg.get("window_s", 60)
    if not isinstance(w, (int, float)) or isinstance(w, bool) or not 1 <= w <= 3600:
        raise MessageError("schema", f"window_s must be a number from 1 to 3600, got {w!r}")
    return {"window_s": float(w)}


def _log(msg):
    _fields(msg, {"level", "message"}, {"message"})
    level = msg.get("level", "info")
    if level not in ("debug", "info", "warning", "error"):
        raise MessageError("schema", f"level must be debug, info, warning or error, got {level!r}")
    text = msg["message"]
    if not isinstance(text, str) or not 1 <= len(text) <= 2000:
        raise MessageError("schema", "message must be a string of 1 to 2000 characters")
    return {"level": level, "message": text.replace("\n", " ").replace("\r", " ")}


def _propose(msg):
    _fields(msg, {"name", "model_b64", "signature_b64", "note"}, {"name", "model_b64"})
    name = msg["name"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise MessageError("schema", f"name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
    out = {"name": name, "note": str(msg.get("note", ""))[:500]}
    for key in ("model_b64", "signature_b64"):
        if key in msg:
            try:
                out[key[:-4]] = base64.b64decode(msg[key], validate=True)
            except (binascii.Error, TypeError, ValueError) as e:
                raise MessageError("schema", f"{key} is not valid base64: {e}") from e
    if not out["model"]:
        raise MessageError("schema", "model_b64 is empty")
    return out


# the allow-list: message type -> its schema check (returns the cleaned arguments). "ping" is
# the guest's heartbeat: the supervisor restarts a VM whose guest stops sending anything.
TYPES = {"ping": _status, "status.get": _status, "telemetry.get": _telemetry, "log.post": _log,
         "model.propose": _propose}


def parse(line: bytes) -> tuple[object, str, dict]:
    """One line → (id, type, cleaned arguments). Raises MessageError naming what is wrong;
    the id is returned when it could be read, so that a refusal can still be matched."""
    import json
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        raise MessageError("malformed", f"not JSON: {e}") from e
    except RecursionError as e:
        raise MessageError("malformed", "JSON nested too deeply") from e
    if not isinstance(msg, dict):
        raise MessageError("malformed", f"expected a JSON object, got {type(msg).__name__}")
    mid = msg.get("id")
    if not (mid is None or (isinstance(mid, int) and not isinstance(mid, bool)) or (isinstance(mid, str) and len(mid) <= 64)):
        raise MessageError("schema", "id must be an integer or a string of at most 64 characters")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        err = MessageError("unknown-type", f"unknown message type {str(kind)[:64]!r}; allowed: {sorted(TYPES)}")
        err.id = mid
        raise err
    try:
        return mid, kind, TYPES[kind](msg)
    except MessageError as e:
        e.id = mid
        raise
