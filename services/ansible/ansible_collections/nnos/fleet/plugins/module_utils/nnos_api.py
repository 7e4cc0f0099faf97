"""The device's HTTP API as the collection's modules speak it: JSON in and out, the bearer
token, and every failure said as what the device (or the network) answered."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request


class ApiError(Exception):
    def __init__(self, message: str, status: int | None = None, offline: bool = False, detail=None):
        super().__init__(message)
        self.status, self.offline, self.detail = status, offline, detail


# what the collection uses that not every nnos has: the first version with it
SINCE = {"scrape token": "0.2.0", "upload hashes": "0.2.0"}


def lacks(url: str, version: str | None, feature: str) -> str:
    """What to say of a device on an nnos too old for ``feature``."""
    return (f"{url} runs nnos {version or '(unknown)'}, which has no {feature} (nnos {SINCE[feature]} or later); "
            f"update it first (rollout.yml -e bundle=…)")


def version_of(url: str, token: str, timeout: float = 30.0) -> str | None:
    try:
        return call(url, token, path="/v2", timeout=timeout).get("version")
    except ApiError:
        return None


def call(url: str, token: str, method: str = "GET", path: str = "/", body: bytes | None = None,
         timeout: float = 30.0, params: str = "", content_type: str = "application/octet-stream"):
    """The JSON answer of ``method path`` on the device at ``url``; ApiError naming the device and
    what went wrong (offline: it did not answer at all)."""
    req = urllib.request.Request(url.rstrip("/") + path + (f"?{params}" if params else ""), data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if e.code == 401:
            raise ApiError(f"{url} refused the token (401): check nnos_token for this device", 401) from e
        raise ApiError(f"{url} answered {e.code} to {method} {path}: {detail or e.reason}", e.code, detail=detail) from e
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ApiError(f"{url} does not answer ({reason})", offline=True) from e
