"""`nnos up` tried as an attacker and a careless user would (regressions from the hardening
issue): the token in logs, a model deleted under probation, `kill -9` of the supervisor, a
second supervisor on the same data directory."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import httpx
import pytest

from nnos.supervisor.ownership import start_time
from tests.support.paths import ROOT
from tests.support.timing import scaled
from tests.support.up import Up, running as _running

pytestmark = pytest.mark.xdist_group("system")


def _job(c, jid, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = c.get(f"/v1/jobs/{jid}").json()
        if j["state"] in ("done", "failed"):
            return j
        time.sleep(0.1)
    raise AssertionError(f"job {jid} did not end: {j}")


def test_token_stays_out_of_logs_and_probation_models_cannot_be_deleted(tmp_path, up_with_api):
    from tests.support.policies import policy_variant
    up, url = up_with_api
    token = up.token
    c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    # the token never reaches a log file, nor the log API; logs are 0640
    logs = os.path.join(up.data, "logs")
    for name in os.listdir(logs):
        path = os.path.join(logs, name)
        assert token not in open(path, errors="replace").read(), name
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o007 == 0, f"{name} is readable by every user"
    lines = c.get("/v1/logs", params={"process": "control-plane"}).json()["lines"]
    assert lines
    assert not any(token in line for line in lines)
    assert token not in up.log
    # the control plane never runs on the loop's CPU (one rule, realtime.loop_cpu, set before its exec)
    with open(os.path.join(up.data, "run", "children.json")) as f:
        api_pid = json.load(f)["control-plane"][0]
    mine = os.sched_getaffinity(0)
    assert len(mine) == 1 or max(mine) not in os.sched_getaffinity(api_pid)
    # a model under probation cannot be deleted; the store and the loop agree afterwards
    for attempt in range(4):
        mid = c.post("/v1/models", content=open(policy_variant(tmp_path, f"v{attempt}", scale=0.95 - 0.01 * attempt),
                                                "rb").read()).json()["id"]
        job = c.post(f"/v1/models/{mid}/activate", params={"probation_s": 3.0, "wait": "false"}).json()
        deadline = time.monotonic() + scaled(60)
        while c.get("/v1/status").json()["loop"]["active"] != mid and time.monotonic() < deadline:
            time.sleep(0.05)
        r = c.delete(f"/v1/models/{mid}")
        if r.status_code == 409:
            break
        # deleted: no longer held, because a host stall overran a tick in probation and the
        # model was rolled back (as it must be) before the DELETE came; asked again, reported
        done = _job(c, job["job"])
        reason = json.dumps(done)
        assert "overrun" in reason, (r.text, done)
        from tests.support.timing import report_retry
        report_retry("hardening: probation delete", f"probation rolled back before the DELETE: {reason[:120]}")
    assert r.status_code == 409, r.text
    assert "under probation" in r.json()["detail"], r.text
    assert _job(c, job["job"])["state"] == "done"
    st = c.get("/v1/status").json()
    assert st["loop"]["active"] == st["store"]["active"] == mid
    # the CLI takes the 12 characters the dashboard shows, and names the logs there are
    first = st["store"]["previous"]
    ctl = [sys.executable, "-m", "nnos.cli", "ctl", "--url", url, "--token", token]
    out = subprocess.run(ctl + ["activate", first[:12]], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr
    assert '"outcome": "active"' in out.stdout, out.stderr
    # a prefix no stored model's id has (ids are content hashes: which one is found, not fixed)
    ids = [m["id"] for m in c.get("/v1/models").json()["models"]]
    unknown = next(ch for ch in "0123456789abcdef" if not any(i.startswith(ch) for i in ids))
    out = subprocess.run(ctl + ["activate", unknown], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "names no model: give more of the id" in out.stderr, out.stderr
    out = subprocess.run(ctl + ["logs", "nope"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "logs exist for:" in out.stderr, out.stderr
    assert "loop" in out.stderr, out.stderr
    c.close()


def test_one_supervisor_per_data_directory_and_no_orphans_after_kill_9(tmp_path):
    up = Up(tmp_path / "data")
    try:
        up.wait_for(_running)
        second = subprocess.run([sys.executable, "-m", "nnos.cli", "up", "--data", up.data, "--board", up.board_path,
                                 "--no-status", "--duration", "5"], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"another nnos up (pid {up.proc.pid}) is running" in second.stderr
        assert "Traceback" not in second.stderr
        with open(os.path.join(up.data, "run", "children.json")) as f:
            children = {n: v[0] for n, v in json.load(f).items() if n != "boot"}
        assert {"loop", "sim-cartpole"} <= set(children)
        up.proc.send_signal(signal.SIGKILL)
        up.proc.wait()
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline and any(_alive(p) for p in children.values()):
            time.sleep(0.05)
        assert not [n for n, p in children.items() if _alive(p)], "children outlived a kill -9 of nnos up"
        # what killed uploads left behind (regression: 29 upload files, 29 intake directories and
        # 4 request sockets were never cleaned); a live process's files stay
        run = os.path.join(up.data, "run")
        dead = subprocess.Popen(["true"])
        dead.wait()
        left = [f"upload-{dead.pid}-abc", f"client-{dead.pid}-abc.sock", f"proposal-{dead.pid}-x"]
        for name in left:
            open(os.path.join(run, name), "w").close()
        os.makedirs(os.path.join(run, f"intake-{dead.pid}-abc", "sub"))
        live = os.path.join(run, f"upload-{os.getpid()}-mine")
        open(live, "w").close()
        again = Up(tmp_path / "data")               # the same data directory starts cleanly
        try:
            again.wait_for(_running)
            assert not [n for n in os.listdir(run) if str(dead.pid) in n]
            assert os.path.exists(live)
        finally:
            again.stop()
    finally:
        up.stop()


def _alive(pid):
    if start_time(pid) is None:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
