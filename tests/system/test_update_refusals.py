"""An update waits while the robot is not in a state to take one, said by `nnos up` itself (its
real loop, control plane and RAUC client, NNOS_RAUC_CONF naming a system config as an image has
one): before this boot is judged, while the loop is in failsafe (the robot stopped answering;
also when it stops while a bundle downloads from a URL: asked again after the download), while a
model is on probation — each a 409 naming why, nothing stored — and, once none holds,
the bundle goes on to RAUC's check (this one, not a bundle, is refused there)."""
from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from nnos.update import record
from tests.support.timing import report_retry, scaled, wait_until
from tests.support.up import Up, free_port, running

pytestmark = pytest.mark.xdist_group("system")

CONF = """[system]
compatible=nnos-amd64-test
bootloader=noop
[keyring]
path={keyring}
[slot.rootfs.0]
device={a}
type=raw
bootname=A
[slot.rootfs.1]
device={b}
type=raw
bootname=B
"""


@pytest.fixture
def device(tmp_path):
    conf = tmp_path / "system.conf"
    conf.write_text(CONF.format(keyring=tmp_path / "keyring.pem", a=tmp_path / "root-a", b=tmp_path / "root-b"))
    u = Up(tmp_path / "data", api_port=free_port(), env={"NNOS_RAUC_CONF": str(conf)})
    try:
        u.wait_for(running)
        url = u.wait_for_api()
        yield u, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {u.token}"}, timeout=scaled(60))
    finally:
        u.stop()


@contextlib.contextmanager
def slow_server(size: int, seconds: float):
    """A URL on 127.0.0.1 whose body of ``size`` bytes takes ``seconds`` to arrive."""
    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for _ in range(16):
                self.wfile.write(b"\0" * (size // 16))
                self.wfile.flush()
                time.sleep(seconds / 16)

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/nnos-next.raucb"
    finally:
        server.shutdown()


def refused(c, data: str, why: str) -> None:
    r = c.post("/v1/system/update", content=b"\0" * (64 << 10))
    assert r.status_code == 409 and why in r.json()["detail"], r.text
    assert glob.glob(os.path.join(data, "updates", "*")) == []                # nothing stored


def test_an_update_waits_for_a_judged_boot_a_running_loop_and_no_model_on_probation(tmp_path, device):
    from tests.support.policies import policy_variant
    up, c = device
    assert c.get("/v1/status").json()["update"]["available"] is True
    refused(c, up.data, "this boot is not judged yet")
    record.judge(os.path.join(up.data, "run"), "good")                        # what the health gate writes
    assert c.get("/v1/status").json()["update"]["this_boot"] == "good"
    # the robot stops answering (its simulator frozen): the loop fails safe, and an update waits
    sim = int(subprocess.run(["pgrep", "-f", f"hardware.sim cartpole --port-link {up.data}"],
                             capture_output=True, text=True).stdout.split()[0])
    os.kill(sim, signal.SIGSTOP)
    try:
        wait_until(lambda: c.get("/v1/status").json()["loop"]["failsafe"], scaled(30), "the loop in failsafe", 0.1)
        refused(c, up.data, "the loop is in failsafe (")
        assert "see /v1/status" not in c.post("/v1/system/update", content=b"x").json()["detail"]   # the reason itself
    finally:
        os.kill(sim, signal.SIGCONT)
    up.wait_for(lambda cnt, recs: cnt["mode"] == "running", scaled(60))
    # fetched from a URL: asked again once the download ends — the robot stopped answering meanwhile
    with slow_server(64 << 10, seconds=2.0) as url:
        r = c.post("/v1/system/update", params={"url": url})
        assert r.status_code == 202, r.text
        os.kill(sim, signal.SIGSTOP)
        try:
            done = wait_until(lambda: (j := c.get(f"/v1/jobs/{r.json()['job']}").json())["state"] != "running" and j,
                              scaled(60), "the URL update's end", 0.1)
        finally:
            os.kill(sim, signal.SIGCONT)
    assert done["state"] == "failed" and done["error"]["status"] == 409, done
    assert "the loop is in failsafe" in done["error"]["detail"], done
    assert glob.glob(os.path.join(up.data, "updates", "*")) == []
    up.wait_for(lambda cnt, recs: cnt["mode"] == "running", scaled(60))
    # a model on probation: an update waits for its activation to end
    for attempt in range(3):
        model = policy_variant(tmp_path, f"v{attempt}", scale=0.97 - 0.01 * attempt)
        mid = c.post("/v1/models", content=open(model, "rb").read()).json()["id"]
        job = c.post(f"/v1/models/{mid}/activate", params={"probation_s": scaled(30), "wait": "false"}).json()["job"]
        wait_until(lambda: c.get("/v1/status").json()["loop"]["active"] == mid, scaled(60), "the new model active", 0.05)
        if c.get(f"/v1/jobs/{job}").json()["state"] == "running":
            break
        # a host stall overran a tick in probation and the model was rolled back before we asked
        report_retry("update refusals: probation", str(c.get(f"/v1/jobs/{job}").json())[:160])
    refused(c, up.data, "a model is on probation in the loop")
    wait_until(lambda: c.get(f"/v1/jobs/{job}").json()["state"] != "running", scaled(90), "the probation's end", 0.2)
    # nothing holds it now: the body goes on to RAUC's check, which refuses it (not a bundle)
    r = c.post("/v1/system/update", content=b"\0" * (64 << 10))
    assert r.status_code == 202, r.text
    done = wait_until(lambda: (j := c.get(f"/v1/jobs/{r.json()['job']}").json())["state"] != "running" and j,
                      scaled(60), "the update job's end", 0.1)
    assert done["state"] == "failed" and "the bundle was refused" in str(done), done
    assert glob.glob(os.path.join(up.data, "updates", "*")) == []              # the refused upload removed
