"""Signed models: with NNOS_REQUIRE_SIGNED=1 only uploads signed by a trusted key are stored."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from nnos.store import ModelStore
from tests.conftest import ROOT
from tests.controlplane.conftest import POLICY, Api


def nnos_cmd(*args):
    r = subprocess.run([sys.executable, "-m", "nnos.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def test_only_trusted_signatures_are_accepted(tmp_path):
    data = tmp_path / "data"
    keys = tmp_path / "keys"
    keys.mkdir()
    nnos_cmd("keygen", "--out", str(keys / "vendor"))
    nnos_cmd("keygen", "--out", str(keys / "stranger"))
    assert oct(os.stat(keys / "vendor").st_mode & 0o777) == "0o600"
    (data / "trusted_keys").mkdir(parents=True)
    shutil.copy(keys / "vendor.pub", data / "trusted_keys" / "vendor.pub")
    model = tmp_path / "policy.onnx"
    shutil.copy(POLICY, model)
    api = Api(data, env={"NNOS_REQUIRE_SIGNED": "1"})
    try:
        body = model.read_bytes()
        r = api.client.post("/v1/models", content=body)
        assert r.status_code == 403 and "unsigned upload" in r.json()["detail"]
        nnos_cmd("sign", str(model), "--key", str(keys / "stranger"))
        r = api.client.post("/v1/models", content=body, headers={"X-Nnos-Signature": (tmp_path / "policy.onnx.sig").read_text().strip()})
        assert r.status_code == 403 and "bad signature" in r.json()["detail"]
        r = api.client.post("/v1/models", content=body + b"\0",
                            headers={"X-Nnos-Signature": (tmp_path / "policy.onnx.sig").read_text().strip()})
        assert r.status_code == 403
        assert ModelStore(str(data)).ids() == []
        nnos_cmd("sign", str(model), "--key", str(keys / "vendor"))
        # nnos ctl push sends FILE.sig along by itself
        out = subprocess.run([sys.executable, "-m", "nnos.cli", "ctl", "push", str(model), "--url", api.url,
                              f"--token={api.token}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        assert '"signed_by": "vendor.pub"' in out.stdout and len(ModelStore(str(data)).ids()) == 1
    finally:
        api.stop()
