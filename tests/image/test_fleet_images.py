"""`./build.sh fleet N --images K` with a real image: a fleet of one `nnos up` device and one
built image booted in qemu, each in its own network namespace on the fleet's bridge. The image's
card carries its API token and the fleet's scrape token on its boot partition, as a fleet flashes
its cards; Prometheus scrapes both (the image says its root
slot and release, the simulated device has none); a model rolls out to both with Ansible, canary
first, and both run it."""
from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.parse
import urllib.request

import pytest

from tests.support.paths import ROOT
from tests.support.policies import policy_variant
from tests.support.rollout import playbook
from tests.support.timing import scaled, wait_until

sys.path.insert(0, os.path.join(ROOT, "services", "fleet"))

import fleet as fleet_mod  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ansible-playbook") or not shutil.which("prometheus"),
                                reason="needs root (network namespaces), ansible-core and prometheus (./build.sh setup)")


@pytest.fixture
def fleet(image, tmp_path):
    f = fleet_mod.Fleet(2, str(tmp_path / "fleet"), images=1)
    try:
        f.start(timeout=scaled(600))
        yield f
    finally:
        f.stop()


def device_info(f) -> dict:
    url = f.prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": "nnos_device_info"})
    with urllib.request.urlopen(url, timeout=5) as r:
        return {x["metric"]["robot"]: x["metric"] for x in json.loads(r.read())["data"]["result"]}


def test_an_image_in_the_fleet_is_scraped_and_takes_a_rollout(fleet, tmp_path):
    sim, img = fleet.devices
    assert isinstance(img, fleet_mod.ImageDevice) and not isinstance(sim, fleet_mod.ImageDevice)
    info = wait_until(lambda: len(i := device_info(fleet)) == 2 and i, scaled(120), "both devices scraped", 1.0,
                      ignore=(OSError, KeyError))
    assert info["dev2"]["slot"] == "A" and info["dev2"]["release"] and info["dev2"]["compatible"], info
    # (an empty label is no label in Prometheus)
    assert "slot" not in info["dev1"] and info["dev1"]["device_id"] != info["dev2"]["device_id"], info
    model = policy_variant(tmp_path, "v1", scale=0.97)
    # a stall of the emulated device in its probation rolls the model back: run again, reported
    # (CI saw a 52.9 ms tick on the image)
    rc, out, recap = playbook(os.path.join(fleet.workdir, "inventory.json"), model, lock=str(tmp_path / "lock"),
                              probation_s=5)
    assert rc == 0, out[-4000:]
    assert recap["dev1"]["changed"] == 1 and recap["dev2"]["changed"] == 1, out[-3000:]
    actives = {d.name: fleet_mod.get_json(d.url + "/v1/status", d.token, timeout=30)["store"]["active"] for d in fleet.devices}
    reports = [fleet_mod.get_json(f"{d.url}/v1/models/{actives[d.name]}", d.token, timeout=30)["report"] for d in fleet.devices]
    digest = __import__("hashlib").sha256(open(model, "rb").read()).hexdigest()
    assert all(rep.get("upload_sha256") == digest for rep in reports), reports
