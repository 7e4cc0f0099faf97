"""/v1/system on a machine that is not an update image (no RAUC system config): the update
state says so, an update is refused before its body is stored (and never without the token),
and a reboot is refused where the supervisor is not init. The install itself runs in the booted
image (tests/image/test_update.py)."""
from __future__ import annotations

import glob
import os

import httpx


def test_the_update_state_says_updates_are_not_possible_here(api):
    r = api.client.get("/v1/system/update")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["available"] is False and got["last_update"] is None and "slots" not in got, got
    assert api.client.get("/v1/status").json()["update"]["available"] is False


def test_an_update_is_refused_before_anything_is_stored(api):
    r = api.client.post("/v1/system/update", content=b"\0" * (256 << 10))
    assert r.status_code == 409 and "updates are not possible here" in r.json()["detail"], r.text
    assert glob.glob(os.path.join(api.data, "updates", "*")) == []            # nothing stored
    r = api.client.post("/v1/system/update", params={"reboot": "sometime"}, content=b"x")
    assert r.status_code == 422 and "reboot must be" in r.json()["detail"], r.text


def test_no_token_no_update_and_no_reboot(api):
    bare = httpx.Client(base_url=api.client.base_url, timeout=30)
    try:
        assert bare.post("/v1/system/update", content=b"x" * 1024).status_code == 401
        assert bare.post("/v1/system/reboot").status_code == 401
    finally:
        bare.close()
    r = api.client.post("/v1/system/reboot")
    assert r.status_code == 409 and "not this machine's init" in r.json()["detail"], r.text


def test_a_bundle_declared_over_the_limit_is_refused_from_its_headers(api):
    import socket
    token = api.client.headers["Authorization"]
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as s:
        s.sendall(f"POST /v1/system/update HTTP/1.1\r\nHost: device\r\nAuthorization: {token}\r\n"
                  f"Content-Length: {3 << 30}\r\n\r\n".encode())            # no body follows
        answer = b"".join(iter(lambda: s.recv(65536), b"")).decode(errors="replace")     # until it closes
    assert answer.startswith("HTTP/1.1 413") and "NNOS_MAX_BUNDLE_BYTES" in answer, answer
