"""The device fetching a bundle itself (POST /v1/system/update?url=): only from its local
network, from a real HTTP server on 127.0.0.1, streamed under the cap, redirects not followed."""
from __future__ import annotations

import asyncio
import http.server
import io
import threading

import pytest
from fastapi import HTTPException

from nnos.controlplane.fetch import checked, fetch, local_address

BODY = bytes(range(256)) * 4096                     # 1 MiB


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/bundle.raucb":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/elsewhere":
            self.send_response(302)
            self.send_header("Location", "http://8.8.8.8/bundle.raucb")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://localhost:{srv.server_address[1]}"
    srv.shutdown()


def test_what_counts_as_the_local_network():
    for a in ("127.0.0.1", "10.0.2.2", "192.168.1.20", "172.16.0.5", "169.254.3.4", "::1", "fd00::1", "fe80::1%eth0",
              "::ffff:192.168.0.1"):
        assert local_address(a), a
    for a in ("8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"):
        assert not local_address(a), a


@pytest.mark.parametrize("url,why", [
    ("http://8.8.8.8/x.raucb", "not on the local network"),
    ("ftp://127.0.0.1/x.raucb", "must be http:// or https://"),
    ("http:///x.raucb", "must be http:// or https://"),
    ("http://127.0.0.1:99999/x", "not a URL"),
])
def test_a_url_off_the_local_network_or_malformed_is_refused_by_name(url, why):
    with pytest.raises(HTTPException) as e:
        asyncio.run(checked(url))
    assert e.value.status_code == 422 and why in e.value.detail, e.value.detail


def test_the_connection_goes_to_the_checked_address(server):
    target, headers = asyncio.run(checked(server + "/bundle.raucb"))
    assert target.startswith(("http://127.0.0.1:", "http://[::1]:")) and headers["Host"] == server.split("//")[1]


def test_a_bundle_is_streamed_with_progress(server):
    out, seen = io.BytesIO(), []
    n = asyncio.run(fetch(server + "/bundle.raucb", out, 2 << 20, lambda done, total: seen.append((done, total))))
    assert n == len(BODY) and out.getvalue() == BODY and seen[-1] == (len(BODY), len(BODY))


@pytest.mark.parametrize("path,limit,status,why", [
    ("/bundle.raucb", 1000, 413, "the limit is 1000"),
    ("/missing.raucb", 2 << 20, 502, "answered 404"),
    ("/elsewhere", 2 << 20, 502, "answered 302"),               # a redirect is not followed off the network
])
def test_what_cannot_be_fetched_says_why(server, path, limit, status, why):
    with pytest.raises(HTTPException) as e:
        asyncio.run(fetch(server + path, io.BytesIO(), limit))
    assert e.value.status_code == status and why in e.value.detail, e.value.detail


def test_the_api_refuses_a_url_where_updates_are_not_possible(api, server):
    r = api.client.post("/v1/system/update", params={"url": server + "/bundle.raucb"})
    assert r.status_code == 409 and "updates are not possible here" in r.json()["detail"], r.text


def test_the_control_plane_imports_httpx_only_to_fetch():
    """httpx (with rich, when installed) was ≈ 10 % of the control plane's imports on every
    boot for a route a device may never use: it is imported by the fetch itself."""
    import subprocess
    import sys
    code = "import sys, nnos.controlplane.app, uvicorn; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
