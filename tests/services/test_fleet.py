"""services/fleet and services/ansible together, as a lab would run them: eight simulated
devices (`nnos up`, each in its own network namespace with its own address and data directory)
watched by Prometheus, and models rolled out with `ansible-playbook` — a good model canary
first to all eight, unchanged on a second run, nothing changed by a dry run; an offline device
is skipped and named, then caught up on the next run; a second rollout while one runs is
refused; a firing alert stops a rollout before it changes anything; a wrong token and an address
where nothing answers are each reported by name; a model that trips its probation stops after
the canary and the rest keep theirs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from nnos.update import record
from tests.support.paths import ROOT
from tests.support.policies import policy_variant
from tests.support.rollout import IGNORE, PLAYBOOK, playbook
from tests.support.timing import scaled, wait_until

sys.path.insert(0, os.path.join(ROOT, "services", "fleet"))

import fleet as fleet_mod  # noqa: E402

pytestmark = [pytest.mark.xdist_group("system"),
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ansible-playbook") or not shutil.which("prometheus"),
                                 reason="needs root (network namespaces), ansible-core and prometheus (./build.sh setup)")]
N = 8


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = fleet_mod.Fleet(N, str(tmp_path_factory.mktemp("fleet")))
    try:
        f.start(timeout=scaled(240))
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"v1": policy_variant(d, "v1", scale=0.97), "v2": policy_variant(d, "v2", scale=0.96),
            "v3": policy_variant(d, "v3", scale=0.95), "bad": policy_variant(d, "bad", nan_below=0.1)}


def actives(f) -> dict:
    return {d.name: fleet_mod.get_json(d.url + "/v1/status", d.token)["store"]["active"] for d in f.devices}


def model_id(dev, path: str) -> str | None:
    digest = __import__("hashlib").sha256(open(path, "rb").read()).hexdigest()
    listing = fleet_mod.get_json(dev.url + "/v1/models", dev.token)
    return next((m["id"] for m in listing["models"] if m["report"].get("upload_sha256") == digest), None)


def inventory(f) -> str:
    return os.path.join(f.workdir, "inventory.json")


def test_a_good_model_reaches_every_device_canary_first(fleet, models):
    t0 = time.monotonic()
    rc, out, recap = playbook(inventory(fleet), models["v1"])
    took = time.monotonic() - t0
    assert rc == 0, out[-4000:]
    ids = {model_id(d, models["v1"]) for d in fleet.devices}
    assert len(ids) == 1 and None not in ids, (ids, out[-3000:])
    v1 = ids.pop()
    assert actives(fleet) == {d.name: v1 for d in fleet.devices}, out[-3000:]
    assert all(recap[d.name]["changed"] == 1 and recap[d.name]["failed"] == 0 for d in fleet.devices), recap
    batches = re.findall(r"PLAY \[Roll it out, canary first\].*?(?=PLAY \[|\Z)", out, re.S)
    assert len(batches) == 2 and set(re.findall(r"\[(dev\d+)\]", batches[0])) == {"dev1"}, out[-4000:]
    at = {d.name: fleet_mod.get_json(d.url + "/v1/models", d.token)["last_activation"]["at"] for d in fleet.devices}
    assert at["dev1"] < min(v for k, v in at.items() if k != "dev1"), at
    print(f"rollout of a model to {N} devices, canary first: {took:.1f} s")
    # a second run changes nothing; a dry run of another model says what it would do, and does nothing
    rc, out, recap = playbook(inventory(fleet), models["v1"])
    assert rc == 0 and all(recap[d.name]["changed"] == 0 for d in fleet.devices), (recap, out[-3000:])
    before = actives(fleet)
    rc, out, recap = playbook(inventory(fleet), models["v2"], "--check")
    assert rc == 0 and out.count("would upload and activate it") == N, out[-3000:]
    assert actives(fleet) == before and model_id(fleet.devices[0], models["v2"]) is None


def test_an_offline_device_is_skipped_named_and_caught_up_next_time(fleet, models):
    last = fleet.devices[-1]
    last.online(False)
    try:
        rc, out, recap = playbook(inventory(fleet), models["v2"])
        assert rc == 0, out[-4000:]
        assert f"offline, skipped: {last.name}" in out and f"{last.name} is offline, skipped" in out, out[-3000:]
    finally:
        last.online(True)
    v2 = model_id(fleet.devices[0], models["v2"])
    now = actives(fleet)
    assert all(now[d.name] == v2 for d in fleet.devices[:-1]) and now[last.name] != v2, now
    rc, out, recap = playbook(inventory(fleet), models["v2"])
    assert rc == 0 and recap[last.name]["changed"] == 1, (recap, out[-3000:])
    assert all(recap[d.name]["changed"] == 0 for d in fleet.devices[:-1]), recap
    assert set(actives(fleet).values()) == {v2} and "offline, skipped: none" in out


def test_a_second_rollout_while_one_runs_is_refused(fleet, models):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "services", "ansible", "ansible.cfg"))
    lock = os.path.join(fleet.workdir, "rollout.lock")
    first = subprocess.Popen(["ansible-playbook", "-i", inventory(fleet), PLAYBOOK, "-e", f"model={models['v2']}",
                              "-e", "soak_s=600", "-e", IGNORE, "-e", f"lock={lock}"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(lock), scaled(60), "the first rollout's lock", 0.1)
        rc, out, _ = playbook(inventory(fleet), models["v2"], lock=lock)
        assert rc != 0 and f"a rollout is already running (ansible-playbook pid {first.pid}" in out, out[-3000:]
    finally:
        first.terminate()
        first.wait(60)
    rc, out, _ = playbook(inventory(fleet), models["v2"], lock=lock)           # its run is gone: taken over
    assert rc == 0 and "took over the lock of a run that is gone" in out, out[-3000:]


def test_a_firing_alert_stops_a_rollout_before_it_changes_anything(fleet, models):
    dev = fleet.devices[4]

    def firing():
        with urllib.request.urlopen(fleet.prometheus_url + "/api/v1/alerts", timeout=5) as r:
            alerts = json.loads(r.read())["data"]["alerts"]
        return any(a["labels"]["alertname"] == "NnosUpdateRolledBack" and a["state"] == "firing" for a in alerts)
    record.save(dev.data, {"state": "rolled back", "why": "slot B did not come up healthy", "from": {}, "to": {}})
    try:
        wait_until(firing, scaled(90), "the update-rolled-back alert", 0.5, ignore=(OSError,))
        before = actives(fleet)
        rc, out, recap = playbook(inventory(fleet), models["v3"])
        assert rc != 0 and f"NnosUpdateRolledBack on {dev.url}" in out, out[-3000:]
        assert actives(fleet) == before and model_id(fleet.devices[0], models["v3"]) is None
    finally:
        os.unlink(record.path(dev.data))
        # resolved in Prometheus too before the next test's rollout asks it (a scrape and an
        # evaluation later)
        wait_until(lambda: not firing(), scaled(90), "the update-rolled-back alert resolved", 0.5, ignore=(OSError,))


def test_a_wrong_token_and_a_device_that_does_not_answer_are_named(fleet, models, tmp_path):
    good = fleet.devices[0]
    inv = tmp_path / "inventory.json"
    inv.write_text(json.dumps({"nnos": {"hosts": {"wrong": {"nnos_url": good.url, "nnos_token": "nnos_not-the-token"}}}}))
    rc, out, recap = playbook(str(inv), models["v2"])
    assert rc != 0 and f"{good.url} refused the token (401)" in out, out[-3000:]
    ghost = {"nnos_url": f"http://{fleet_mod.NET}.250:8080", "nnos_token": "x"}
    inv.write_text(json.dumps({"nnos": {"hosts": {"ghost": ghost}}}))
    rc, out, recap = playbook(str(inv), models["v2"])
    assert rc == 0 and "offline, skipped: ghost" in out and "does not answer" in out, out[-3000:]


def test_a_model_that_trips_its_probation_stops_after_the_canary(fleet, models):
    # last: the canary's rollback fires NnosModelRolledBack for ten minutes, which (rightly)
    # stops any rollout to this fleet until then
    before = actives(fleet)
    rc, out, recap = playbook(inventory(fleet), models["bad"])
    assert rc != 0 and recap["dev1"]["failed"] == 1, out[-4000:]
    said = r"model [0-9a-f]{12} was rolled back: output is NaN or infinite; the device runs [0-9a-f]{12} again"
    assert re.search(said, out), out[-3000:]
    assert not any(d.name in recap and d.name != "dev1" for d in fleet.devices), recap       # never reached
    assert actives(fleet) == before                                   # the canary is back on its model, the rest untouched
