"""A system update rolled out to a fleet of booted images with services/ansible, the way a model
is: two devices in qemu (booted through their EFI firmware and GRUB), the canary first, each
step done only when the device's own health gate kept the new slot; running it again changes
nothing; a bundle whose nnos crashes at start is rolled back by the canary, which stops the
rollout — the other device keeps its slot and version untouched.

Asked for with NNOS_IMAGE_UPDATE_TEST=1, with the other update tests (≈ 25 min)."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from nnos import flags
from tests.support.bundles import CRASH, changed_root, nnos_file, same_root, work
from tests.support.image import OUT, ROOT, Device
from tests.support.timing import scaled

pytestmark = pytest.mark.skipif(not flags.IMAGE_UPDATE_TEST.get() or not __import__("shutil").which("ansible-playbook"),
                                reason="NNOS_IMAGE_UPDATE_TEST=1 asks for it (and ansible-core)")
PLAYBOOK = os.path.join(ROOT, "services", "ansible", "rollout.yml")
PROBATION_S = 20


@pytest.fixture(scope="module")
def bundles(image, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fleet-bundles"))
    version = work(OUT)["version"]
    return {"version": version, "newer": same_root(OUT, d, version + ".f"),
            "crashing": changed_root(OUT, d, version + ".fc", {"supervisor/up.py": nnos_file(OUT, "supervisor/up.py") + CRASH})}


@pytest.fixture
def fleet(image, tmp_path):
    for i in (1, 2):
        os.makedirs(tmp_path / f"d{i}")
    devices = [Device(image, str(tmp_path / f"d{i}"), uefi=True, watchdog_s=5.0) for i in (1, 2)]
    try:
        for d in devices:
            d.vm.start()
        for d in devices:
            d.wait_boot(timeout=scaled(300))
            d.wait_status(lambda s: s["update"]["available"] and s["update"]["this_boot"], scaled(180), "judged")
        yield devices
    finally:
        for d in devices:
            d.close()


def rollout(devices, tmp_path, bundle: str, version: str) -> tuple[int, str]:
    hosts = {f"d{i + 1}": {"nnos_url": str(d.client.base_url), "nnos_token": d.client.headers["Authorization"].split()[1]}
             for i, d in enumerate(devices)}
    inv = tmp_path / "inventory.json"
    inv.write_text(json.dumps({"nnos": {"hosts": hosts}}))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "services", "ansible", "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    r = subprocess.run(["ansible-playbook", "-i", str(inv), PLAYBOOK, "-e", f"bundle={bundle}", "-e", f"version={version}",
                        "-e", f"probation_s={PROBATION_S}", "-e", f"lock={tmp_path}/lock"],
                       capture_output=True, text=True, env=env, timeout=scaled(3600))
    return r.returncode, r.stdout + r.stderr


@pytest.mark.slow
def test_an_update_rolled_out_canary_first_and_stopped_by_a_rollback(bundles, fleet, tmp_path):
    d1, d2 = fleet
    want = bundles["version"] + ".f"
    rc, out = rollout(fleet, tmp_path, bundles["newer"], want)
    assert rc == 0, out[-5000:]
    first = re.findall(r"PLAY \[Roll it out, canary first\].*?(?=PLAY \[|\Z)", out, re.S)
    assert len(first) == 2 and set(re.findall(r"\[(d\d)\]", first[0])) == {"d1"}, out[-4000:]
    for d in fleet:
        u = d.status()["update"]
        assert u["slot"] == "B" and u["version"] == want and u["state"] == "good", u
    assert re.search(r"d1: runs \S+ in slot B \(was \S+, slot A\): kept", out), out[-3000:]
    # again: nothing to do
    rc, out = rollout(fleet, tmp_path, bundles["newer"], want)
    assert rc == 0 and re.search(r"d1\s+: ok=\d+\s+changed=0", out) and re.search(r"d2\s+: ok=\d+\s+changed=0", out), out[-3000:]
    # a bundle whose nnos crashes at start: the canary boots it N times, rolls back, and the rollout stops
    rc, out = rollout(fleet, tmp_path, bundles["crashing"], bundles["version"] + ".fc")
    assert rc != 0 and "was not kept: rolled back because" in out, out[-5000:]
    assert not re.search(r"^d2\s+:", out, re.M), out[-3000:]                       # never reached
    u1, u2 = d1.status()["update"], d2.status()["update"]
    assert u1["slot"] == "B" and u1["version"] == want and u1["state"] == "rolled back", u1
    assert u2["slot"] == "B" and u2["version"] == want and u2["state"] == "good", u2
