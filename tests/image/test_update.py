"""Updates in the field, in qemu through the EFI firmware and GRUB (the boot loader picks the
slot): a signed bundle uploaded over the API is installed by RAUC into slot B while the loop
ticks, the device reboots into it, the new slot passes its probation and is kept — and the same
back to A. Bundles signed by another key, truncated or not bundles at all are refused with the
reason, and nothing changes.

Asked for with NNOS_IMAGE_UPDATE_TEST=1 (not yet in CI): open (benchmarks/RESULTS.md, issue 20)
— booted through OVMF and GRUB under TCG, the guest's loop goes without a heartbeat for over 5 s
now and then (never seen booted with -kernel); a new slot whose loop its watchdog kills fails its
probation and is rolled back, as it must, so the update is asked again (a reported retry)."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import httpx
import pytest

from nnos import flags

from tests.support.image import OUT, ROOT, Device
from tests.support.timing import report_retry, scaled, wait_until

sys.path.insert(0, os.path.join(ROOT, "image"))
sys.path.insert(0, os.path.join(ROOT, "image", "lib"))

from bundle import make  # noqa: E402
from rauc_keys import make_dev_keys, signing_dir  # noqa: E402

pytestmark = pytest.mark.skipif(not flags.IMAGE_UPDATE_TEST.get(), reason="NNOS_IMAGE_UPDATE_TEST=1 asks for it")
PROBATION_S = 20
# a new slot whose loop is restarted by its watchdog fails its probation, as it must; the emulated
# device's first boot of a slot stalls for more than a second now and then (TCG): room for that
WATCHDOG_S = 5.0


@pytest.fixture(scope="module")
def bundles(image, tmp_path_factory):
    """The image's own bundle (what slot A holds), the same root as a newer version, and the same
    signed by a key the device does not trust."""
    d = tmp_path_factory.mktemp("bundles")
    own = glob.glob(os.path.join(OUT, "nnos-*-amd64.raucb"))
    assert len(own) == 1, own
    root = os.path.join(OUT, "work-amd64", "root.sqfs")
    with open(os.path.join(OUT, "work-amd64", "compatible")) as f:
        compatible = f.read().strip()
    with open(os.path.join(OUT, "work-amd64", "version")) as f:
        version = f.read().strip()
    newer = str(d / "newer.raucb")
    make(root, compatible, version + ".b", signing_dir(None)[0], newer)
    stranger = str(d / "stranger.raucb")
    make(root, compatible, version + ".x", make_dev_keys(str(d / "keys"), "a stranger"), stranger)
    return {"own": own[0], "newer": newer, "stranger": stranger, "version": version}


@pytest.fixture
def efi_device(image, tmp_path):
    d = Device(image, str(tmp_path), uefi=True, watchdog_s=WATCHDOG_S)
    yield d
    d.close()


def post_bundle(dev: Device, path: str, **params) -> httpx.Response:
    with open(path, "rb") as f:
        return dev.client.post("/v1/system/update", params=params, content=f, timeout=scaled(600))


def wait_job(dev: Device, job: str, seconds: float) -> dict:
    return wait_until(lambda: (lambda j: j if j["state"] != "running" else None)(dev.client.get(f"/v1/jobs/{job}").json()),
                      seconds, f"update job {job}", 1.0, ignore=(httpx.HTTPError,))


def update_to(dev: Device, path: str, slot: str, version: str, cli: bool = False) -> dict:
    """Install ``path`` and reboot into it (over the API, or with `nnos ctl update BUNDLE now`);
    the device's status once the new slot is kept. A probation failed by a loop its watchdog
    killed is the health gate doing its job on an emulated device that stalled (UEFI-booted
    guests under TCG stall for seconds now and then): the device is back on the old slot, which
    says why, and the update is asked again — reported as a host-stall retry."""
    for attempt in range(3):
        st = _install_and_boot(dev, path, slot, cli)
        upd = st["update"]
        stalled = "missed its watchdog" in dev.vm.console()[dev.mark:]
        if upd["state"] == "rolled back" and stalled and attempt < 2:
            assert "rolled back because" in upd["last_update"], upd
            report_retry("test_a_to_b_and_back", f"slot {slot}'s probation failed on a loop watchdog kill: "
                         f"{upd['last_update']}")
            dev.wait_boot(timeout=300)                          # back on the old slot
            dev.wait_status(lambda s: s["update"]["slot"] != slot, scaled(120), "the old slot again")
            continue
        assert upd["slot"] == slot and upd["state"] == "good", (upd, dev.vm.console()[-4000:])
        assert upd["version"] == version, upd
        return st
    raise AssertionError("unreachable")


def _install_and_boot(dev: Device, path: str, slot: str, cli: bool) -> dict:
    dev.mark = len(dev.vm.console())
    if cli:
        token = dev.client.headers["Authorization"].split()[1]
        r = subprocess.run([sys.executable, "-m", "nnos.cli", "ctl", "update", path, "now", "--url", str(dev.client.base_url),
                            "--token", token], capture_output=True, text=True, timeout=scaled(900))
        assert r.returncode == 0 and "installing" in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])
    else:
        r = post_bundle(dev, path, reboot="now", probation_s=PROBATION_S)
        assert r.status_code == 202, r.text
    dev.vm.wait_for(r"init: reboot", scaled(600), after=dev.mark)
    dev.vm.wait_for(r"nnos: booting slot " + slot, scaled(120), after=dev.mark)
    dev.wait_boot(timeout=300)
    return dev.wait_status(lambda s: s["update"]["state"] in ("good", "rolled back", "failed"),
                           scaled(PROBATION_S + 240), "the new slot's probation")


@pytest.mark.slow
def test_a_to_b_and_back_with_bad_bundles_refused(bundles, efi_device):
    dev = efi_device.boot(timeout=300)
    st = dev.wait_status(lambda s: s["update"]["available"] and s["update"]["slot"] == "A", scaled(60), "updates")
    assert st["update"]["version"] == bundles["version"], st["update"]
    for what, path, why in (("another key", bundles["stranger"], "refused"),
                            ("truncated", _truncated(bundles["own"], dev), "refused")):
        r = post_bundle(dev, path)
        assert r.status_code == 202, r.text
        job = wait_job(dev, r.json()["job"], scaled(300))
        assert job["state"] == "failed" and job["error"]["status"] == 422 and why in job["error"]["detail"], (what, job)
    slots = dev.client.get("/v1/system/update").json()["slots"]
    assert slots["B"]["version"] is None and slots["A"]["state"] == "booted", slots      # nothing changed
    ticks = dev.status()["loop"]["ticks"]
    st = update_to(dev, bundles["newer"], "B", bundles["version"] + ".b")
    assert "good" in st["update"]["last_update"], st["update"]
    assert st["loop"]["ticks"] > 0 and not st["loop"]["failsafe"] and ticks > 0
    st = update_to(dev, bundles["own"], "A", bundles["version"], cli=True)
    slots = dev.client.get("/v1/system/update").json()["slots"]
    assert slots["A"]["boot_status"] == "good" and slots["B"]["version"] == bundles["version"] + ".b", slots


def _truncated(path: str, dev: Device) -> str:
    out = os.path.join(dev.vm.workdir, "truncated.raucb")
    with open(path, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read(os.path.getsize(path) // 2))
    return out
