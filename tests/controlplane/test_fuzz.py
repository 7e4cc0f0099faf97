"""The whole API fuzzed from its own OpenAPI document with schemathesis: no input may make the
server fail (no 5xx), with or without a loop behind it."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.api import Api
from tests.support.paths import POLICY

SCHEMATHESIS = os.path.join(os.path.dirname(__import__("sys").executable), "schemathesis")
if not os.path.exists(SCHEMATHESIS):
    SCHEMATHESIS = shutil.which("schemathesis") or SCHEMATHESIS


@pytest.mark.skipif(not os.path.exists(SCHEMATHESIS), reason="schemathesis is not installed (./build.sh installs it)")
def test_no_server_errors_under_fuzzing(tmp_path):
    api = Api(tmp_path / "data")
    try:
        mid = api.client.post("/v1/models", content=open(POLICY, "rb").read()).json()["id"]
        r = subprocess.run([SCHEMATHESIS, "run", api.url + "/openapi.json", "-H", f"Authorization: Bearer {api.token}",
                            "--checks", "not_a_server_error", "-n", "40", "--generation-deterministic",
                            "--request-timeout", "60"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-6000:]
        assert "Server error" not in r.stdout
        assert api.client.get(f"/v1/models/{mid}").status_code == 200      # the store survived it
    finally:
        api.stop()
