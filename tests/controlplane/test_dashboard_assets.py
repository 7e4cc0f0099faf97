"""The dashboard's files on a real uvicorn: the page and everything it loads come from the
device (no CDN: it is offline), without the token (code, never data); uPlot is the pinned,
licensed version recorded in VENDOR.json."""
from __future__ import annotations

import hashlib
import json
import re

import httpx

from tests.support.paths import ROOT

STATIC = f"{ROOT}/nnos/controlplane/static"


def test_the_vendored_uplot_is_the_pinned_release_with_its_licence():
    v = json.load(open(f"{STATIC}/vendor/uplot/VENDOR.json"))
    assert v["package"] == "uplot" and re.fullmatch(r"\d+\.\d+\.\d+", v["version"]) and v["licence"] == "MIT"
    assert v["tarball"].endswith(f"uplot-{v['version']}.tgz") and v["integrity"].startswith("sha512-")
    for name, digest in v["sha256"].items():
        assert hashlib.sha256(open(f"{STATIC}/vendor/uplot/{name}", "rb").read()).hexdigest() == digest, name
    assert "MIT License" in open(f"{STATIC}/vendor/uplot/LICENSE").read()


def test_the_page_loads_only_the_devices_own_files_and_they_need_no_token(api):
    page = httpx.get(api.url + "/", timeout=30)
    assert page.status_code == 200
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(r.startswith("/static/") for r in refs), refs           # nothing from elsewhere
    for ref in refs:
        r = httpx.get(api.url + ref, timeout=30)
        assert r.status_code == 200 and r.content, ref
    assert httpx.get(api.url + "/favicon.ico", timeout=30).status_code == 204
    assert httpx.post(api.url + "/static/dashboard.js", timeout=30).status_code == 401, "only reading is public"
    for escape in ("/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/vendor/../../app.py"):
        r = httpx.get(api.url + escape, timeout=30)
        assert r.status_code in (401, 404) and "create_app" not in r.text, escape        # nothing outside static/
    assert httpx.get(api.url + "/v1/status", timeout=30).status_code == 401, "the data still needs the token"
