"""A fleet is never all on one release, and its devices reboot. Two devices in their own network
namespaces, Prometheus scraping them: dev1 runs this nnos, dev2 the release before the fleet
features (nnos 0.1.0, from this repository's history: `git archive`). The fleet's scrape token
is set by Ansible on dev1 and refused by name on dev2 (its version and what it lacks); a model
rolls out to both, dev2 warned that it cannot be idempotent; Prometheus says why dev2's scrapes
fail; and dev1 rebooting while it is scraped is a scrape error for a few seconds, then the same
device (its id kept), its loop counters restarting without a false alert."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from tests.support.paths import ROOT
from tests.support.policies import policy_variant
from tests.support.timing import scaled, wait_until

sys.path.insert(0, os.path.join(ROOT, "services", "fleet"))

import fleet as fleet_mod  # noqa: E402

OLDER = "37c68e5"          # the last commit before the fleet features: nnos 0.1.0
pytestmark = [pytest.mark.xdist_group("system"),
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ansible-playbook") or not shutil.which("prometheus"),
                                 reason="needs root (network namespaces), ansible-core and prometheus (./build.sh setup)")]
ANSIBLE = os.path.join(ROOT, "services", "ansible")


def older_tree(dest: str) -> str:
    """The older release's source, from git (a clone without that history cannot run this test)."""
    have = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", f"{OLDER}^{{commit}}"], capture_output=True)
    if have.returncode != 0:
        pytest.skip(f"this clone lacks commit {OLDER} (the older release); clone with history")
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", ROOT, "archive", OLDER], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-versions")
    f = fleet_mod.Fleet(2, str(work / "fleet"))
    f.devices[1].older(older_tree(str(work / "nnos-0.1.0")))
    try:
        f.start(timeout=scaled(240))
        yield f
    finally:
        f.stop()


def play(f, playbook: str, *extra: str) -> tuple[int, str, dict]:
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ANSIBLE, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    r = subprocess.run(["ansible-playbook", "-i", os.path.join(f.workdir, "inventory.json"),
                        os.path.join(ANSIBLE, playbook), *extra], capture_output=True, text=True, env=env, timeout=scaled(900))
    out = r.stdout + r.stderr
    recap = {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
             for m in re.finditer(r"^(\S+)\s+: (ok=.*)$", out, re.M)}
    return r.returncode, " ".join(out.split()), recap         # (warnings come wrapped)


def version(d) -> str:
    return fleet_mod.get_json(d.url + "/v2", d.token)["version"]


def scrape(d, token: str) -> int:
    req = urllib.request.Request(d.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_scrape_token_is_set_by_ansible_and_an_older_device_is_named(fleet, tmp_path):
    new, old = fleet.devices
    assert version(new) != version(old) == "0.1.0"
    token_file = tmp_path / "scrape_token"
    token_file.write_text("nnos_scrape_rotated-" + "r" * 30 + "\n")
    rc, out, recap = play(fleet, "scrape_token.yml", "-e", f"scrape_token_file={token_file}", "--check")
    assert recap["dev1"]["changed"] == 1 and scrape(new, token_file.read_text().strip()) == 401, out[-3000:]
    rc, out, recap = play(fleet, "scrape_token.yml", "-e", f"scrape_token_file={token_file}")
    assert rc != 0 and recap["dev1"]["changed"] == 1 and recap["dev1"]["failed"] == 0, out[-3000:]
    assert scrape(new, token_file.read_text().strip()) == 200 and scrape(new, fleet.scrape_token) == 401
    said = (f"{old.url} runs nnos 0.1.0, which has no scrape token (nnos 0.2.0 or later); update it first")
    assert recap["dev2"]["failed"] == 1 and said in out, out[-3000:]
    assert token_file.read_text().strip() not in out                       # never logged
    rc, out, recap = play(fleet, "scrape_token.yml", "-e", f"scrape_token_file={token_file}", "--limit", "dev1")
    assert rc == 0 and recap["dev1"]["changed"] == 0, out[-3000:]           # unchanged the second time
    # back to the token the fleet's Prometheus holds
    token_file.write_text(fleet.scrape_token + "\n")
    rc, out, recap = play(fleet, "scrape_token.yml", "-e", f"scrape_token_file={token_file}", "--limit", "dev1")
    assert rc == 0 and recap["dev1"]["changed"] == 1 and scrape(new, fleet.scrape_token) == 200, out[-3000:]


def test_a_model_reaches_both_releases_and_the_older_one_is_warned(fleet, tmp_path):
    model = policy_variant(tmp_path, "v1", scale=0.97)
    ignore = json.dumps({"ignore_alerts": ["NnosDeviceDown", "NnosModelRolledBack", "NnosLoopMisses"]})
    args = ("-e", f"model={model}", "-e", "probation_s=1", "-e", ignore, "-e", f"lock={tmp_path / 'lock'}")
    rc, out, recap = play(fleet, "rollout.yml", *args)
    assert rc == 0 and recap["dev1"]["changed"] == 1 and recap["dev2"]["changed"] == 1, out[-3000:]
    assert "runs nnos 0.1.0, which has no upload hashes (nnos 0.2.0 or later)" in out, out[-3000:]
    rc, out, recap = play(fleet, "rollout.yml", *args)
    assert rc == 0 and recap["dev1"]["changed"] == 0, out[-3000:]          # this release: unchanged
    assert recap["dev2"]["changed"] == 1 and "uploaded again on every run" in out, out[-3000:]


def targets(f) -> dict:
    with urllib.request.urlopen(f.prometheus_url + "/api/v1/targets", timeout=5) as r:
        active = json.loads(r.read())["data"]["activeTargets"]
    return {t["labels"]["robot"]: t for t in active}


def query(f, q: str) -> list:
    url = f.prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]["result"]


def test_prometheus_says_why_the_older_device_is_not_scraped(fleet):
    t = wait_until(lambda: (t := targets(fleet)).get("dev2", {}).get("lastError") and t, scaled(60),
                   "dev2's scrape error", 0.5, ignore=(OSError, KeyError))
    assert "401" in t["dev2"]["lastError"] and t["dev2"]["health"] == "down", t["dev2"]
    assert t["dev1"]["health"] == "up", t["dev1"]


def test_a_device_rebooting_while_scraped_is_a_short_scrape_error_then_the_same_device(fleet):
    dev = fleet.devices[0]
    wait_until(lambda: targets(fleet)["dev1"]["health"] == "up", scaled(60), "dev1 scraped", 0.5, ignore=(OSError, KeyError))
    ident = query(fleet, 'nnos_device_info{robot="dev1"}')[0]["metric"]["device_id"]
    dev.stop()                                                  # the reboot: down, then up again
    t = wait_until(lambda: (t := targets(fleet)["dev1"])["health"] == "down" and t, scaled(60),
                   "a failed scrape while dev1 is down", 0.5, ignore=(OSError, KeyError))
    assert "connect" in t["lastError"] or "refused" in t["lastError"], t
    dev.start()
    wait_until(dev.ready, scaled(120), "dev1 back", 0.5)
    wait_until(lambda: targets(fleet)["dev1"]["health"] == "up", scaled(60), "dev1 scraped again", 0.5,
               ignore=(OSError, KeyError))
    wait_until(lambda: query(fleet, 'nnos_loop_ticks{robot="dev1"}') and
               float(query(fleet, 'nnos_loop_uptime_seconds{robot="dev1"}')[0]["value"][1]) > 0, scaled(60),
               "dev1's new loop scraped", 0.5, ignore=(OSError, KeyError, IndexError))
    assert query(fleet, 'nnos_device_info{robot="dev1"}')[0]["metric"]["device_id"] == ident       # the same device
    # its counters restarted: a counter reset to rate(), not a burst of misses; a short reboot is no alert
    ratio = query(fleet, 'nnos:loop_miss_ratio:rate1m{robot="dev1"}')
    assert not ratio or float(ratio[0]["value"][1]) < 0.01, ratio
    with urllib.request.urlopen(fleet.prometheus_url + "/api/v1/alerts", timeout=5) as r:
        alerts = json.loads(r.read())["data"]["alerts"]
    assert not [a for a in alerts if a["labels"].get("robot") == "dev1" and a["state"] == "firing"], alerts
