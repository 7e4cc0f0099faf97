"""Shared dependencies of the routers: settings, the token check, the store, the board, the
loop's control socket and telemetry."""
from __future__ import annotations

import secrets

from fastapi import HTTPException, Request

from ..runtime.control import ControlError, request as loop_request
from ..telemetry import TelemetryReader


def state(req: Request):
    return req.app.state


def require_token(req: Request) -> None:
    """Every route but health: Authorization: Bearer <token>, compared in constant time."""
    header = req.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    expected = req.app.state.token
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


def ask_loop(st, msg: dict, timeout: float = 10.0) -> dict:
    st.request_id += 1
    try:
        return loop_request(st.settings.socket, dict(msg, id=st.request_id), timeout=timeout)
    except ControlError as e:        # a state of the device, not a server fault: 409, never a 5xx
        raise HTTPException(409, f"the loop is not running or not answering: {e}") from e


def telemetry(st) -> TelemetryReader | None:
    try:
        return TelemetryReader(st.settings.telemetry)
    except (OSError, ValueError):
        return None
