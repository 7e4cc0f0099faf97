"""The control plane's HTTP API: auth, model intake (good and hostile uploads), the store's
routes, KServe v2 inference, and device state — against a real uvicorn on 127.0.0.1."""
from __future__ import annotations

import io
import os
import time
import stat
import subprocess
import tarfile
import zipfile

import httpx
import numpy as np
import onnx
import pytest
from onnx import helper

import nnos
from nnos.store import ModelStore
from tests.support.api import Api
from tests.support.paths import POLICY
from tests.support.onnx_models import model, rand, vi


def test_health_is_open_everything_else_needs_the_token(api):
    assert httpx.get(api.url + "/v2/health/live").json() == {"live": True}
    for path in ("/v1/status", "/v1/models", "/metrics", "/v2/models/active", "/openapi.json"):
        r = httpx.get(api.url + path)
        if path == "/openapi.json":
            assert r.status_code == 200          # the API's own description is public
            continue
        shape = "error" if path.startswith("/v2") else "detail"      # KServe v2 clients read "error"
        assert r.status_code == 401
        assert r.json() == {shape: "unauthorized"}
        bad = httpx.get(api.url + path, headers={"Authorization": "Bearer " + "x" * 43})
        assert bad.status_code == 401
        assert api.token not in bad.text
        assert httpx.get(api.url + path, headers={"Authorization": api.token}).status_code == 401


def test_token_file_is_private_and_never_printed(api, tmp_path):
    assert api.token.startswith("nnos_")     # regression: a token starting with '-' broke `nnos ctl --token X`
    st = os.stat(os.path.join(api.data, "token"))
    assert stat.S_IMODE(st.st_mode) == 0o600
    # regression (hardening): the "shown once" line went through the supervisor into a 0644 log
    first = open(api.stderr_path).read()
    assert api.token not in first
    assert "a new API token is in" in first
    again = Api(tmp_path / "again")
    again.stop()
    second = Api(tmp_path / "again")
    second.stop()
    assert second.token == again.token
    assert second.token not in open(second.stderr_path).read()


def _upload(api, data: bytes, expect=201):
    r = api.client.post("/v1/models", content=data)
    assert r.status_code == expect, r.text
    return r.json()


def test_upload_onnx_compiles_verifies_measures_and_stores(api):
    body = _upload(api, open(POLICY, "rb").read())
    rep = body["report"]
    assert len(body["id"]) == 64
    assert rep["format"] == "onnx"
    assert rep["verify"]["outputs_finite"]
    assert rep["latency"]["runs"] == 1000
    assert rep["latency"]["p50_us"] > 0
    assert rep["admission"]["admitted"]
    assert rep["ops"] == {"Gemm": 3, "Tanh": 3}
    assert rep["arena_bytes"] > 0
    assert rep["flops"] > 0
    listed = api.client.get("/v1/models").json()
    assert body["id"] in [m["id"] for m in listed["models"]]
    assert api.client.get(f"/v1/models/{body['id']}").json()["report"]["format"] == "onnx"


def _external(tmp_path):
    m = onnx.load(POLICY)
    path = str(tmp_path / "policy.onnx")
    onnx.save_model(m, path, save_as_external_data=True, location="policy.onnx.data", size_threshold=0)
    return path, path + ".data"


def test_upload_onnx_with_external_data_as_zip_and_tar(api, tmp_path):
    onnx_path, data_path = _external(tmp_path)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.write(onnx_path, "policy/policy.onnx")
        z.write(data_path, "policy/policy.onnx.data")
    assert _upload(api, zbuf.getvalue())["report"]["format"] == "zip"
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as t:
        t.add(onnx_path, "policy.onnx")
        t.add(data_path, "policy.onnx.data")
    raw = tbuf.getvalue()
    import gzip
    assert _upload(api, gzip.decompress(raw))["report"]["format"] == "tar"
    # regression (hardening): .tar.gz / .tgz uploads were read as ONNX and refused
    assert _upload(api, raw)["report"]["format"] == "tar"


def test_upload_as_a_multipart_form_like_curl_F(api, tmp_path):
    # regression (hardening): `curl -F file=@model.onnx` stored the form's bytes as the model
    body = open(POLICY, "rb").read()
    r = api.client.post("/v1/models", files={"file": ("policy.onnx", body, "application/octet-stream")},
                        data={"note": "a field before or after the file is ignored"})
    assert r.status_code == 201, r.text
    assert r.json()["id"] == _upload(api, body)["id"]
    r = api.client.post("/v1/models", data={"only": "fields"}, files={})
    assert r.status_code in (400, 422), r.text
    import shutil
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {api.token}", "-F", f"file=@{POLICY}",
                              f"{api.url}/v1/models"], capture_output=True, text=True, timeout=120)
        assert '"id"' in out.stdout, out.stdout


def test_a_gzip_bomb_is_refused_without_expanding_it(api, tmp_path):
    import zlib
    z = zlib.compressobj(9, zlib.DEFLATED, 31)                         # gzip framing
    zeros = b"\0" * (1 << 20)
    bomb = b"".join(z.compress(zeros) for _ in range(300)) + z.flush()  # 300 MiB of zeros, ~300 KiB
    r = api.client.post("/v1/models", content=bomb)
    assert r.status_code == 413, r.text
    assert "expands past" in r.json()["detail"], r.text


def test_upload_a_compiled_plan(api, tmp_path):
    data = nnos.compile(POLICY).to_bytes()
    assert _upload(api, data)["report"]["format"] == "plan"


def test_generated_code_in_an_uploaded_plan_is_dropped(api):
    """SPIR-V (or any generated code) in an uploaded plan is never kept: a device makes its own."""
    plan = nnos.compile(POLICY)
    plan.kernels = {"vulkan": {"0" * 64: b"\x03\x02\x23\x07" + b"\xff" * 60}}   # nothing nnos made
    got = _upload(api, plan.to_bytes())
    assert got["report"]["kernels_dropped"] == {"vulkan": 1}, got["report"]
    assert ModelStore(api.data).load(got["id"]).kernels == {}


@pytest.mark.parametrize("what,payload,status,message", [       # ids by name: xdist workers must agree
    pytest.param("random bytes", np.random.default_rng(3).bytes(3000), 422, "not a readable ONNX model", id="random"),
    pytest.param("empty", b"", 400, "empty upload", id="empty"),
    pytest.param("a broken plan", b"NNOSPLAN" + bytes(100), 400, "not a valid plan", id="broken-plan"),
])
def test_bad_uploads_are_refused_and_nothing_is_stored(api, what, payload, status, message):
    before = set(ModelStore(api.data).ids())
    r = api.client.post("/v1/models", content=payload)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"], r.text
    assert set(ModelStore(api.data).ids()) == before


def test_oversize_upload_is_refused(api):
    r = api.client.post("/v1/models", content=b"\x01" * (5 << 20))
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]


def test_hostile_archives(api):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../etc/evil.onnx", b"x")
    r = api.client.post("/v1/models", content=buf.getvalue())
    assert r.status_code == 400
    assert "unsafe path" in r.json()["detail"]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.onnx", b"\0" * (300 << 20))          # 300 MiB of zeros, ~300 KiB zipped
    r = api.client.post("/v1/models", content=bomb.getvalue())
    assert r.status_code == 413
    assert "expands past" in r.json()["detail"]
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as t:
        info = tarfile.TarInfo("model.onnx")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    r = api.client.post("/v1/models", content=tbuf.getvalue())
    assert r.status_code == 400
    assert "link or device" in r.json()["detail"]


def test_unsupported_op_and_board_mismatch(api, tmp_path, zoo):
    m = model([helper.make_node("Hardmax", ["obs"], ["action"], name="the_hardmax")], [vi("obs", [1, 4])],
              [vi("action", [1, 4])])
    p = tmp_path / "hardmax.onnx"
    onnx.save(m, str(p))
    r = api.client.post("/v1/models", content=p.read_bytes())
    assert r.status_code == 422
    assert "node 'the_hardmax' (op Hardmax): unsupported op" in r.json()["detail"]
    r = api.client.post("/v1/models", content=open(zoo["mlp_s"], "rb").read())
    assert r.status_code == 422
    assert "does not fit the board" in r.json()["detail"]
    assert "board.toml:" in r.json()["detail"]


def test_kserve_metadata_and_inference_match_the_plan(api):
    mid = _upload(api, open(POLICY, "rb").read())["id"]
    meta = api.client.get(f"/v2/models/{mid}").json()
    assert meta["inputs"] == [{"name": "obs", "datatype": "FP32", "shape": [1, 4]}]
    assert api.client.get(f"/v2/models/{mid}/ready").json()["ready"]
    obs = rand(1, 4, seed=3)
    r = api.client.post(f"/v2/models/{mid}/infer", json={"id": "r1", "inputs": [
        {"name": "obs", "shape": [1, 4], "datatype": "FP32", "data": obs.reshape(-1).tolist()}]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    ref = nnos.compile(POLICY)({"obs": obs})["action"]
    assert out["name"] == "action"
    assert out["shape"] == [1, 1]
    assert np.allclose(out["data"], ref.reshape(-1), rtol=1e-6)
    assert r.json()["id"] == "r1"
    assert r.json()["model_version"] == mid
    bad = api.client.post(f"/v2/models/{mid}/infer", json={"inputs": [
        {"name": "obs", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert bad.status_code == 400
    assert "expected [1, 4]" in bad.json()["error"]      # the protocol's error shape
    garbled = api.client.post(f"/v2/models/{mid}/infer", content=b"{not json")
    assert garbled.status_code == 400
    assert "not an inference request" in garbled.json()["error"]
    assert api.client.get("/v2/models/" + "0" * 64).status_code == 404


def test_delete_refuses_the_active_model(api):
    mid = _upload(api, open(POLICY, "rb").read())["id"]
    ModelStore(api.data).activate(mid, "test")
    r = api.client.delete(f"/v1/models/{mid}")
    assert r.status_code == 409
    assert "is active" in r.json()["detail"]
    assert api.client.delete("/v1/models/" + "f" * 64).status_code == 404
    assert api.client.get("/v1/models/nope").status_code == 404


def test_state_without_a_loop(api):
    st = api.client.get("/v1/status").json()
    assert st["loop"]["mode"] == "down"
    assert st["board"]["name"] == "cartpole-sim"
    from nnos.backends import ops_vulkan
    why = ops_vulkan.available()                          # the GPU line: the device, or why there is none
    assert st["gpu"]["available"] is (why is None) and (st["gpu"].get("device") or st["gpu"]["why"])
    m = api.client.get("/metrics")
    assert m.status_code == 200
    assert "nnos_loop_up 0.0" in m.text
    cfg = api.client.get("/v1/config").json()
    assert cfg["outputs"][0]["channel"] == "cartpole.force"
    assert cfg["rate_hz"] == 50
    r = api.client.post("/v1/models/" + "a" * 64 + "/activate")
    assert r.status_code == 404


def test_the_status_says_what_became_of_the_boot_partitions_config(api, tmp_path):
    """The outcome init recorded for each file a builder put on the boot partition (nnos/boot/
    bootconfig.py, beside the board config): a headless device's only way to say it refused one."""
    assert api.client.get("/v1/status").json()["boot_config"] == {}
    from nnos.boot import bootconfig
    (tmp_path / "hostname").write_text("arm-3\n")
    (tmp_path / "network.toml").write_text('gateway = "10.0.0.1"\n')
    config = os.path.dirname(api.board)
    try:
        bootconfig.take(str(tmp_path), config, lambda msg: None)
        got = api.client.get("/v1/status").json()["boot_config"]
        assert got["hostname"] == {"result": "imported", "why": None}, got
        assert got["network.toml"]["result"] == "refused", got
        assert "a gateway needs a static address" in got["network.toml"]["why"], got
    finally:
        for name in (bootconfig.RECORD, "hostname"):
            os.unlink(os.path.join(config, name))


def test_long_operations_report_progress(api):
    r = api.client.post("/v1/models", params={"wait": "false"}, content=open(POLICY, "rb").read())
    assert r.status_code == 202
    assert r.json()["state"] == "running"
    job_url = r.json()["progress"]
    steps = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        j = api.client.get(job_url).json()
        steps.add(j["step"])
        if j["state"] != "running":
            break
        time.sleep(0.01)
    assert j["state"] == "done", j
    assert len(j["result"]["id"]) == 64, j
    history = [x["step"] for x in j["steps"]]
    assert history == ["queued", "waiting for the compiler", "reading", "compiling", "checking against the board",
                       "verifying", "measuring", "storing", "done"]
    bad = api.client.post("/v1/models", params={"wait": "false"}, content=os.urandom(500))
    deadline = time.monotonic() + 30
    while api.client.get(bad.json()["progress"]).json()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = api.client.get(bad.json()["progress"]).json()
    assert failed["state"] == "failed"
    assert failed["error"]["status"] == 422
    assert api.client.get("/v1/jobs/999999").status_code == 404


def test_put_config_validates_and_applies_atomically(api):
    text = open(api.board).read()
    r = api.client.put("/v1/config", content=text.replace("clamp = [-10.0, 10.0]", "clamp = [-6.0, 6.0]"))
    assert r.status_code == 200
    assert "applies when it starts" in r.json()["note"]
    assert "clamp = [-6.0, 6.0]" in open(api.board).read()
    assert api.client.get("/v1/config").json()["outputs"][0]["clamp"] == [-6.0, 6.0]
    good = open(api.board).read()
    r = api.client.put("/v1/config", content=good.replace('kind = "sensor"', 'kind = "sensr"', 1))
    assert r.status_code == 422
    assert "board.toml:" in r.json()["detail"]
    assert "kind must be" in r.json()["detail"]
    assert open(api.board).read() == good                                   # nothing changed
    ModelStore(api.data).activate(_upload(api, open(POLICY, "rb").read())["id"], "test")
    r = api.client.put("/v1/config", content=good.replace('channels = ["cartpole.cart", "cartpole.pole"]',
                                                          'channels = ["cartpole.cart"]'))
    assert r.status_code == 422
    assert "does not fit the active model" in r.json()["detail"]
    assert api.client.put("/v1/config", content=b"[board\n").status_code == 422
    assert open(api.board).read() == good


def test_put_config_twice_and_at_next_start(api):
    # regression: after one PUT the app's board named the deleted candidate file, so a second
    # PUT failed with 500
    text = open(api.board).read()
    for clamp in ("[-7.0, 7.0]", "[-8.0, 8.0]"):
        r = api.client.put("/v1/config", content=text.replace("clamp = [-10.0, 10.0]", f"clamp = {clamp}"))
        assert r.status_code == 200, r.text
        assert api.client.get("/v1/config").json()["path"] == api.board
    now = open(api.board).read()
    r = api.client.put("/v1/config", params={"at": "next-start"}, content=now.replace("rate_hz = 50", "rate_hz = 40"))
    assert r.status_code == 200
    assert "next starts" in r.json()["note"]
    assert "rate_hz = 40" in open(api.board).read()
    assert api.client.get("/v1/config").json()["rate_hz"] == 50             # the running config until then
    assert api.client.put("/v1/config", params={"at": "later"}, content=now).status_code == 422


def test_power_actions_only_on_the_device(api):
    assert api.client.post("/v1/device/reboot").status_code == 409
    assert api.client.post("/v1/device/poweroff").status_code == 409
    assert api.client.post("/v1/device/explode").status_code == 404
    assert httpx.post(api.url + "/v1/device/reboot").status_code == 401


@pytest.fixture
def tiny_partition(tmp_path):
    """A 3 MiB tmpfs standing for a nearly full data partition (needs root to mount)."""
    d = tmp_path / "tiny"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_a_full_data_partition_is_a_507_and_nothing_half_stored(tiny_partition):
    # regression (hardening): a full partition gave 500 on upload and PUT /v1/config, and one
    # plan was stored without its report
    a = Api(tiny_partition / "data")
    try:
        body = open(POLICY, "rb").read()
        filler = tiny_partition / "data" / "filler"
        with open(filler, "wb") as f:                        # leave less than an upload needs
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        r = a.client.post("/v1/models", content=body)
        assert r.status_code == 507, r.text
        assert "data partition" in r.json()["detail"]
        assert "bytes free" in r.json()["detail"]
        models = a.client.get("/v1/models").json()["models"]
        assert all(m["report"] for m in models)               # never a plan without its report
        r = a.client.put("/v1/config", content=open(a.board).read())
        assert r.status_code == 507, r.text
        os.unlink(filler)
        r = a.client.post("/v1/models", content=body)
        assert r.status_code == 201, r.text
        assert a.client.get(f"/v1/models/{r.json()['id']}").json()["report"]
    finally:
        a.stop()


def test_store_put_is_whole_or_nothing(tmp_path, monkeypatch):
    import nnos
    from nnos import store as store_mod
    s = store_mod.ModelStore(str(tmp_path / "d"))
    data = nnos.compile(POLICY, check=False).to_bytes()
    real = store_mod.atomic_write

    def full(path, blob, mode=0o644):
        if path.endswith(".nnos"):
            raise OSError(28, "No space left on device")
        real(path, blob, mode)
    monkeypatch.setattr(store_mod, "atomic_write", full)
    with pytest.raises(OSError):
        s.put(data, {"r": 1})
    assert s.ids() == []
    assert not os.listdir(s.models)


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _raw(port, head: bytes, body_bytes: int = 0, read=True) -> bytes:
    """One raw HTTP request: ``head`` then ``body_bytes`` zero bytes, as far as the server lets
    us send them; returns what came back."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(head)
        chunk = b"\0" * (1 << 20)
        sent = 0
        try:
            while sent < body_bytes:
                s.sendall(chunk[:min(len(chunk), body_bytes - sent)])
                sent += min(len(chunk), body_bytes - sent)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return s.recv(65536) if read else b""
    finally:
        s.close()


@pytest.mark.parametrize("route,ctype", [("/v1/models", "application/octet-stream"),
                                         ("/v1/vm/network", "application/json"),
                                         ("/v2/models/active/infer", "text/plain"),
                                         ("/v1/config", "application/json")])
def test_no_body_is_read_before_the_token(api, route, ctype):
    # regression (hardening): FastAPI parsed 60 MB JSON bodies before require_token ran
    # (+380 MB of control-plane memory), then answered 401
    before = _rss_kb(api.proc.pid)
    method = "PUT" if route == "/v1/config" else "POST"
    size = 48 << 20
    head = (f"{method} {route} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    reply = _raw(api.port, head + f"{size:x}\r\n".encode(), size)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert _rss_kb(api.proc.pid) - before < 20_000
    declared = _raw(api.port, (f"{method} {route} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                               f"Content-Length: {size}\r\n\r\n").encode(), 1 << 20)
    assert declared.startswith(b"HTTP/1.1 401"), declared[:200]


def test_every_route_has_a_body_limit(api):
    big = b"{" + b" " * (2 << 20) + b"}"
    r = api.client.post("/v1/vm/network", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["detail"], r.text
    head = (f"POST /v1/vm/network HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    reply = _raw(api.port, head + f"{3 << 20:x}\r\n".encode(), 3 << 20)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_a_slow_client_is_closed(tmp_path):
    import socket
    a = Api(tmp_path / "slow", env={"NNOS_API_HEADER_TIMEOUT_S": "1"})
    try:
        s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")          # never finishes its header
        t0 = time.monotonic()
        assert s.recv(100) == b""                                     # closed by the server
        assert time.monotonic() - t0 < 20
        s.close()
        assert a.client.get("/v2/health/live").status_code == 200     # the server itself is fine
    finally:
        a.stop()


def test_the_same_model_uploaded_twice_has_one_id(api, tmp_path):
    # regression (hardening): the same ONNX uploaded four times got four ids (the plan held
    # its compile time); the id is a hash of what defines the model
    body = open(POLICY, "rb").read()
    ids = {api.client.post("/v1/models", content=body).json()["id"] for _ in range(3)}
    assert len(ids) == 1
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(onnx.load(POLICY), str(a))
    onnx.save(onnx.load(POLICY), str(b))
    assert nnos.compile(str(a)).to_bytes() == nnos.compile(str(b)).to_bytes()   # the file's name is not in it
    assert nnos.compile(str(a), batch=2).to_bytes() != nnos.compile(str(a)).to_bytes()


def test_huge_or_crafted_models_are_a_4xx_naming_what(api):
    # regression (hardening): these answered 500
    from onnx import TensorProto
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 20, 1 << 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20, 1 << 20])]),
        opset_imports=[helper.make_opsetid("", 17)])
    r = api.client.post("/v1/models", content=m.SerializeToString())
    assert r.status_code == 422, r.text
    assert "input 'x'" in r.json()["detail"], r.text
    import hashlib
    import struct
    from nnos.plan import artifact
    head = b'{"graph": {"types": {"t": {"dtype": "float32", "shape": [-1]}}}, "weights": [1]}'
    body = struct.pack("<8sIIQ", artifact.MAGIC, artifact.FORMAT_VERSION, 0, len(head)) + head
    body += b"\0" * (-len(body) % 64)
    r = api.client.post("/v1/models", content=body + hashlib.sha256(body).digest())
    assert r.status_code == 400, r.text
    assert "weights" in r.json()["detail"], r.text


def test_a_board_for_another_robot_applies_at_next_start_with_its_own_model(api, tmp_path):
    """The active model cannot drive the vision board; its default model can: taken for the
    next start (the supervisor provisions that model then), refused now, and refused outright
    when the board names no default that fits."""
    from tests.support.paths import BOARDS, ROOT
    ModelStore(api.data).activate(_upload(api, open(POLICY, "rb").read())["id"], "test")
    before = open(api.board).read()
    vision = open(f"{BOARDS}/vision_so101.toml").read().replace('model = "models/', f'model = "{ROOT}/models/')
    r = api.client.put("/v1/config", content=vision)
    assert r.status_code == 422 and "applies at=next-start with a default model that fits it" in r.json()["detail"]
    assert open(api.board).read() == before
    r = api.client.put("/v1/config", params={"at": "next-start"}, content=vision.replace("follow.onnx", "nope.onnx"))
    assert r.status_code == 422 and "does not fit the active model" in r.json()["detail"]
    r = api.client.put("/v1/config", params={"at": "next-start"}, content=vision)
    assert r.status_code == 200 and "its default model follow.onnx is provisioned then" in r.json()["note"], r.text
    assert open(api.board).read() == vision
