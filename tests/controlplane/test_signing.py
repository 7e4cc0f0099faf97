"""Signed models: with NNOS_REQUIRE_SIGNED=1 only uploads signed by a trusted key are stored."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from nnos.store import ModelStore
from tests.support.paths import ROOT
from tests.support.api import Api
from tests.support.paths import POLICY


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
        assert r.status_code == 403
        assert "unsigned upload" in r.json()["detail"]
        nnos_cmd("sign", str(model), "--key", str(keys / "stranger"))
        sig = (tmp_path / "policy.onnx.sig").read_text().strip()
        r = api.client.post("/v1/models", content=body, headers={"X-Nnos-Signature": sig})
        assert r.status_code == 403
        assert "bad signature" in r.json()["detail"]
        r = api.client.post("/v1/models", content=body + b"\0",
                            headers={"X-Nnos-Signature": (tmp_path / "policy.onnx.sig").read_text().strip()})
        assert r.status_code == 403
        assert ModelStore(str(data)).ids() == []
        nnos_cmd("sign", str(model), "--key", str(keys / "vendor"))
        # nnos ctl push sends FILE.sig along by itself
        out = subprocess.run([sys.executable, "-m", "nnos.cli", "ctl", "push", str(model), "--url", api.url,
                              f"--token={api.token}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        assert '"signed_by": "vendor.pub"' in out.stdout
        assert len(ModelStore(str(data)).ids()) == 1
    finally:
        api.stop()


def test_the_policy_holds_at_activation_at_start_and_for_the_default_model(tmp_path, monkeypatch):
    # regression (hardening): with NNOS_REQUIRE_SIGNED=1, a model stored before signing was
    # turned on, and the board's unsigned default model, activated
    import nnos
    from nnos_hardware.board import load_board
    from nnos_hardware.devices import SimulatedDevice
    from nnos.runtime.loop import Loop, LoopConfig
    from nnos.signing import SignatureError
    from nnos.supervisor.up import provision
    from nnos.telemetry import TelemetryWriter
    data = tmp_path / "data"
    store = ModelStore(str(data))
    unsigned = store.put(nnos.compile(POLICY, check=False).to_bytes())     # stored with the policy off
    store.activate(unsigned)
    with pytest.raises(SignatureError, match="not signed"):
        store.check_signed(unsigned)
    # the control plane refuses to activate it (403), naming why
    api = Api(data, env={"NNOS_REQUIRE_SIGNED": "1"})
    try:
        r = api.client.post(f"/v1/models/{unsigned}/activate")
        assert r.status_code == 403, r.text
        assert "not signed" in r.json()["detail"], r.text
    finally:
        api.stop()
    # the loop refuses to start it (and after a restart: the same check at every start)
    board = load_board(api.board)
    dev = SimulatedDevice("cartpole", board.devices[0].channels)
    dev.open()
    logs = []
    tel = TelemetryWriter(str(tmp_path / "tel"))
    loop = Loop(board, {"cartpole": dev}, store, tel, LoopConfig(require_signed=True), log=logs.append)
    loop.load_initial()
    assert loop.active is None, logs
    assert any("not signed" in line for line in logs), logs
    # the default model is countersigned with the device's key when provisioned
    monkeypatch.setenv("NNOS_REQUIRE_SIGNED", "1")
    fresh = ModelStore(str(tmp_path / "fresh"))
    provision(board, fresh)
    mid = fresh.state()["active"]
    fresh.check_signed(mid)                                   # verifies
    assert os.stat(tmp_path / "fresh" / "keys" / "device").st_mode & 0o077 == 0
    loop2 = Loop(board, {"cartpole": dev}, fresh, tel, LoopConfig(require_signed=True), log=logs.append)
    loop2.load_initial()
    assert loop2.active is not None
    assert loop2.active.id == mid
    # a tampered countersignature is refused
    with open(os.path.join(fresh.models, mid + ".sig"), "w") as f:
        f.write("AAAA" * 22)
    with pytest.raises(SignatureError, match="does not verify"):
        fresh.check_signed(mid)
    tel.close()
