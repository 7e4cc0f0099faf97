"""What runs before any route: the token check and the body limits, as raw ASGI, so that no
request body is read — let alone parsed — before the client has shown the token; and slow
clients that never finish their request header are closed.

Routes keep their own ``require_token`` dependency as well (and it documents the security in
the OpenAPI schema); this is the gate that runs first.
"""
from __future__ import annotations

import ipaddress
import json
import re

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import flags
from .deps import bearer_ok

STATIC = "/static/"      # the dashboard's script, styles and uPlot: code, never data
PUBLIC = {"/", "/favicon.ico", "/v2/health/live", "/v2/health/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
JSON_LIMIT = 1 << 20                                   # every body that is not a model or a tensor
_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")


def body_limit(method: str, path: str, upload_limit: int) -> int:
    if method == "POST" and (path == "/v1/models" or _INFER.match(path)):
        return upload_limit
    if method == "POST" and path == "/v1/system/update":
        return flags.MAX_BUNDLE_BYTES.get()          # a whole root filesystem
    return JSON_LIMIT


def limit_name(method: str, path: str) -> str:
    """Where a route's limit is set, for the refusal's message."""
    if method == "POST" and path == "/v1/system/update":
        return " (NNOS_MAX_BUNDLE_BYTES)"
    return " (the upload limit)" if method == "POST" and (path == "/v1/models" or _INFER.match(path)) else ""


def scrape_refusal(client: str | None, ranges: tuple) -> str | None:
    """Why /metrics is not answered to ``client`` (NNOS_SCRAPE_FROM), or None."""
    if not ranges:
        return None
    try:
        addr = ipaddress.ip_address((client or "").split("%")[0])
        addr = addr.ipv4_mapped or addr if isinstance(addr, ipaddress.IPv6Address) else addr
    except ValueError:
        addr = None
    if addr is not None and any(addr in net for net in ranges if net.version == addr.version):
        return None
    return (f"scrapes are answered from {', '.join(map(str, ranges))} only (NNOS_SCRAPE_FROM); "
            f"{client or 'an unknown address'} is not in it")


class Guard:
    """ASGI middleware: 401 before the body for every non-public route without the token (the
    scrape token opens GET /metrics alone); 403 for /metrics from outside NNOS_SCRAPE_FROM; 413
    once a body passes its route's limit (declared or streamed)."""

    def __init__(self, app, token: str, upload_limit: int, scrape_token=lambda: "", scrape_from: tuple = ()):
        """``scrape_token``: a function that gives the scrape token in force (PUT /v1/system/scrape-token changes it)."""
        self.app, self.token, self.upload_limit = app, token, upload_limit
        self.scrape_token, self.scrape_from = scrape_token, scrape_from

    def _authorized(self, method: str, path: str, authorization: str) -> bool:
        if bearer_ok(authorization, self.token):
            return True
        scrape = self.scrape_token()
        return bool(scrape) and method == "GET" and path == "/metrics" and bearer_ok(authorization, scrape)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])
        public = path in PUBLIC or (method == "GET" and path.startswith(STATIC))
        if not public and not self._authorized(method, path, headers.get(b"authorization", b"").decode("latin-1")):
            return await _refuse(send, path, 401, "unauthorized", [(b"www-authenticate", b"Bearer")])
        if path == "/metrics":          # (after the token: who is refused learns the ranges only with one)
            why = scrape_refusal((scope.get("client") or (None,))[0], self.scrape_from)
            if why:
                return await _refuse(send, path, 403, why)
        limit = body_limit(method, path, self.upload_limit)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _refuse(send, path, 413, f"a body of {int(declared)} bytes exceeds this route's "
                                            f"{limit}-byte limit{limit_name(method, path)}")
        seen, started, refused = 0, False, False

        async def limited():
            # past the limit: the 413 goes out now and the route sees a disconnect (whatever
            # the route does with that — FastAPI turns it into a 400 — is never sent)
            nonlocal seen, refused
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit and not refused:
                    refused = True
                    if not started:
                        await _refuse(send, path, 413, f"the body exceeds this route's {limit}-byte limit")
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg):
            nonlocal started
            if refused:
                return
            started = started or msg["type"] == "http.response.start"
            await send(msg)
        await self.app(scope, limited, guarded_send)


def error_body(path: str, message: str) -> dict:
    """Errors in the shape each protocol's clients read: KServe v2's {"error"} under /v2,
    FastAPI's {"detail"} elsewhere."""
    return {"error": message} if path.startswith("/v2") else {"detail": message}


async def _refuse(send, path: str, status: int, detail: str, extra=()) -> None:
    body = json.dumps(error_body(path, detail)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


class SlowHeaderH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's header: a client that
    has not sent a whole request header within ``HEADER_TIMEOUT_S`` of connecting (or of its
    previous response) is disconnected, so slow clients cannot hold connections open."""
    HEADER_TIMEOUT_S = 10.0
    _header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.HEADER_TIMEOUT_S, self._header_deadline)

    def _header_deadline(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
