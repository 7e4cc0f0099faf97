"""Shared dependencies of the routers: settings, the token check, the store, the board, the
loop's and the supervisor's control sockets, and telemetry."""
from __future__ import annotations

import os
import secrets

from fastapi import HTTPException, Request

from ..runtime.control import ControlError, request as loop_request
from ..telemetry import TelemetryReader
from .state import AppState


def state(req: Request) -> AppState:
    return req.app.state.nnos


def bearer_ok(authorization: str, expected: str) -> bool:
    """An Authorization header of "Bearer <token>", compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), expected.encode())


def ws_token_ok(ws, expected: str) -> bool:
    """A WebSocket's token: the Authorization header or, for browsers and the Foxglove app, the
    ``token`` query parameter; checked before the upgrade is accepted."""
    header = ws.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ws.query_params.get("token", "")
    return secrets.compare_digest(given.strip().encode(), expected.encode())


def require_token(req: Request) -> None:
    """Every route but health (guard.py checks it first, before any body is read)."""
    if not bearer_ok(req.headers.get("authorization", ""), req.app.state.nnos.token):
        raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


def disk_full(e: OSError, data: str) -> HTTPException | None:
    """ENOSPC/EDQUOT as the client should see it: 507, naming the partition and what is free."""
    import errno
    import shutil
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    try:
        free = f"{shutil.disk_usage(data).free} bytes free"
    except OSError:
        free = "free space unknown"
    return HTTPException(507, f"the data partition ({data}) is full ({free}): nothing was stored; "
                              "delete models or recordings, then try again")


def _ask(st, path: str, msg: dict, timeout: float, who: str) -> dict:
    st.request_id += 1
    try:
        return loop_request(path, dict(msg, id=st.request_id), timeout=timeout)
    except ControlError as e:        # a state of the device, not a server fault: 409, never a 5xx
        raise HTTPException(409, f"{who}: {e}") from e


def ask_loop(st, msg: dict, timeout: float = 10.0) -> dict:
    return _ask(st, st.settings.socket, msg, timeout, "the loop is not running or not answering")


def ask_supervisor(st, msg: dict, timeout: float = 15.0) -> dict:
    """The supervisor's socket (DATA/run/supervisor.sock): process states, start/stop the VM."""
    return _ask(st, os.path.join(st.settings.run, "supervisor.sock"), msg, timeout,
                "the supervisor is not reachable (not started by nnos up?)")


def telemetry(st) -> TelemetryReader | None:
    try:
        return TelemetryReader(st.settings.telemetry)
    except (OSError, ValueError):
        return None


def ask_init(action: str) -> None:
    """Ask PID 1 (the supervisor as init) to reboot or power off; 409 where it is not init."""
    import signal
    if os.getppid() != 1 or os.environ.get("NNOS_INIT") != "1":
        raise HTTPException(409, "the supervisor is not this machine's init (nnos up --init): "
                                 "reboot or power off the host the usual way")
    os.kill(1, signal.SIGTERM if action == "reboot" else signal.SIGUSR2)
