"""The legacy VM's side of the control plane without a VM: proposals the real broker put in
quarantine are taken into the store only by a local accept, through the upload's checks and
the signing policy, and never made active by it; settings are validated; the network switch
needs the supervisor."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import onnx
import pytest
from onnx import helper

from nnos.legacy.broker import Broker
from nnos.store import ModelStore
from tests.support.paths import ROOT
from tests.support.api import Api
from tests.support.paths import POLICY
from tests.support.policies import policy_variant


def propose(data: str, model: bytes, signature: str | None = None, name: str = "offer") -> str:
    msg = {"id": 1, "type": "model.propose", "name": name, "model_b64": base64.b64encode(model).decode()}
    if signature:
        msg["signature_b64"] = signature
    r = json.loads(Broker(data).handle(json.dumps(msg).encode()))
    assert r["ok"], r
    return r["result"]["id"]


def audit(data: str) -> list[dict]:
    with open(os.path.join(data, "audit", "legacy-vm.jsonl")) as f:
        return [json.loads(x) for x in f]


@pytest.fixture(scope="module")
def vmapi(tmp_path_factory):
    a = Api(tmp_path_factory.mktemp("vmapi"))
    yield a
    a.stop()


def test_accept_stores_but_never_activates(vmapi, tmp_path):
    c, data = vmapi.client, vmapi.data
    variant = open(policy_variant(tmp_path, "offer", scale=0.9), "rb").read()
    pid = propose(data, variant, name="vendor-v2")
    listed = c.get("/v1/vm/proposals").json()["proposals"]
    assert [p["id"] for p in listed] == [pid]
    assert listed[0]["name"] == "vendor-v2"
    before = ModelStore(data).state()["active"]
    r = c.post(f"/v1/vm/proposals/{pid}/accept")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["active"] is False
    assert "activate" in body["note"]
    assert body["report"]["proposed_by"] == "legacy-vm"
    assert body["report"]["proposal"]["name"] == "vendor-v2"
    store = ModelStore(data)
    assert body["id"] in store.ids()
    assert store.state()["active"] == before          # stored, not active
    assert c.get("/v1/vm/proposals").json()["proposals"] == []                      # out of quarantine
    assert audit(data)[-1] | {"t": 0} == {"t": 0, "by": "control-plane", "type": "proposal.accept", "ok": True,
                                          "proposal": pid, "model": body["id"]}
    assert c.post(f"/v1/vm/proposals/{pid}/accept").status_code == 404             # once


def test_a_proposal_that_fails_the_checks_stays_in_quarantine(vmapi):
    c, data = vmapi.client, vmapi.data
    m = onnx.load(POLICY)                      # parses (the broker takes it) but does not fit the board
    m.graph.input[0].type.tensor_type.shape.dim[-1].dim_value = 7
    m.graph.node.insert(0, helper.make_node("Slice", ["obs", "s0", "s1", "s2"], ["obs4"]))
    for n in m.graph.node[1:]:
        n.input[:] = ["obs4" if x == "obs" else x for x in n.input]
    for name, v in (("s0", [0]), ("s1", [4]), ("s2", [-1])):
        m.graph.initializer.append(onnx.numpy_helper.from_array(__import__("numpy").array(v, "int64"), name))
    pid = propose(data, m.SerializeToString(), name="wrong-shape")
    n = len(ModelStore(data).ids())
    r = c.post(f"/v1/vm/proposals/{pid}/accept")
    assert r.status_code == 422, r.text
    assert "board" in r.json()["detail"], r.text
    assert len(ModelStore(data).ids()) == n
    assert [p["id"] for p in c.get("/v1/vm/proposals").json()["proposals"]] == [pid]
    last = audit(data)[-1]
    assert last["type"] == "proposal.accept"
    assert last["ok"] is False
    assert last["code"] == 422
    assert c.delete(f"/v1/vm/proposals/{pid}").status_code == 204
    assert c.get("/v1/vm/proposals").json()["proposals"] == []
    assert audit(data)[-1]["type"] == "proposal.reject"


def test_bad_proposal_ids(vmapi):
    c = vmapi.client
    assert c.post("/v1/vm/proposals/../../token/accept").status_code in (400, 404)
    r = c.post("/v1/vm/proposals/zz/accept")
    assert r.status_code == 400
    assert "64 hex digits" in r.json()["detail"]
    r = c.delete("/v1/vm/proposals/" + "0" * 64)
    assert r.status_code == 404
    assert "no proposal" in r.json()["detail"]


def test_settings_validated_and_kept(vmapi):
    c = vmapi.client
    assert c.get("/v1/vm/settings").json()["network"] is False                      # off by default
    r = c.put("/v1/vm/settings", json={"telemetry_url": "http://vendor.example/t", "interval_s": 30})
    assert r.status_code == 200
    assert r.json()["telemetry_url"] == "http://vendor.example/t"
    assert c.get("/v1/vm/settings").json()["interval_s"] == 30
    # values the VM's settings refuse: 400 saying which
    for bad, word in (({"telemetry_url": "ftp://x"}, "telemetry_url"), ({"telemetry_url": "http://a b"}, "telemetry_url"),
                      ({"interval_s": 0}, "interval_s"), ({"agents": ["rootkit"]}, "agents"),
                      ({"network": True}, "POST /v1/vm/network")):
        r = c.put("/v1/vm/settings", json=bad)
        assert r.status_code == 400, (bad, r.text)
        assert word in r.json()["detail"], (bad, r.text)
    # shapes the body's schema refuses: 422 naming the field
    for bad, where in (({"colour": 1}, "body.colour"), ({"probe_urls": "http://x"}, "body.probe_urls"),
                       ({"interval_s": "30"}, "body.interval_s")):
        r = c.put("/v1/vm/settings", json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert any(e["where"] == where for e in r.json()["detail"]), (bad, r.text)
    assert c.get("/v1/vm/settings").json()["interval_s"] == 30                      # nothing half-written


def test_network_switch_needs_the_supervisor_and_a_boolean(vmapi):
    c = vmapi.client
    r = c.post("/v1/vm/network", json={"enabled": "yes"})
    assert r.status_code == 422, r.text
    assert [e["where"] for e in r.json()["detail"]] == ["body.enabled"], r.text
    r = c.post("/v1/vm/network", json={"enabled": False})
    assert r.status_code == 409, r.text
    assert "supervisor is not reachable" in r.json()["detail"], r.text
    assert c.get("/v1/vm/settings").json()["network"] is False


def test_signing_policy_applies_to_proposals(tmp_path):
    data = tmp_path / "data"
    keys = tmp_path / "keys"
    keys.mkdir()
    for who in ("vendor", "stranger"):
        subprocess.run([sys.executable, "-m", "nnos.cli", "keygen", "--out", str(keys / who)], check=True, cwd=ROOT,
                       capture_output=True)
    (data / "trusted_keys").mkdir(parents=True)
    shutil.copy(keys / "vendor.pub", data / "trusted_keys" / "vendor.pub")
    model = tmp_path / "offer.onnx"
    model.write_bytes(open(policy_variant(tmp_path, "offer", scale=0.8), "rb").read())

    def signed_by(who: str) -> str:
        subprocess.run([sys.executable, "-m", "nnos.cli", "sign", str(model), "--key", str(keys / who)], check=True,
                       cwd=ROOT, capture_output=True)
        return (tmp_path / "offer.onnx.sig").read_text().strip()
    api = Api(data, env={"NNOS_REQUIRE_SIGNED": "1"})
    try:
        body = model.read_bytes()
        unsigned = propose(str(data), body)
        r = api.client.post(f"/v1/vm/proposals/{unsigned}/accept")
        assert r.status_code == 403, r.text
        assert "unsigned" in r.json()["detail"], r.text
        propose(str(data), body, signed_by("stranger"))                  # same bytes: same proposal, new signature
        r = api.client.post(f"/v1/vm/proposals/{unsigned}/accept")
        assert r.status_code == 403, r.text
        assert "bad signature" in r.json()["detail"], r.text
        assert ModelStore(str(data)).ids() == []
        propose(str(data), body, signed_by("vendor"))
        r = api.client.post(f"/v1/vm/proposals/{unsigned}/accept")
        assert r.status_code == 201, r.text
        assert r.json()["report"]["signed_by"] == "vendor.pub", r.text
        assert ModelStore(str(data)).state()["active"] is None or ModelStore(str(data)).state()["active"] != r.json()["id"]
    finally:
        api.stop()
