"""Updates in the field, in qemu through the EFI firmware and GRUB (the boot loader picks the
slot): a signed bundle uploaded over the API is installed by RAUC into slot B while the loop
ticks, the device reboots into it, the new slot passes its probation and is kept — and back to A
with the CLI, the device fetching the bundle from a server on its network. Bundles signed by
another key, truncated, for another architecture or larger than the slot are refused with the
reason, and nothing changes; so are a second update while one installs and bodies declared over
the limit or the free space. A power cut in the middle of an install still boots A and says
so; one during B's first boot leaves A's attempts as they were (B, installed from the dashboard,
boots again and is kept). A bundle whose nnos crashes at start is booted N times, then the
device is back on A with the reason. A casync bundle of a release that changes every nnos file
is installed from its URL, the device downloading under a fifth of the full bundle.

Asked for with NNOS_IMAGE_UPDATE_TEST=1 (≈ 25 min: not in CI's 30-minute budget). A new slot
whose loop its watchdog kills fails its probation and is rolled back, as it must; should an
emulated device stall that long, the update is asked again (a reported host-stall retry)."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys

import httpx
import pytest

import nnos
from nnos import flags

from tests.support.bundles import CRASH, FAST, SITE, changed_root, nnos_file, same_root, work
from tests.support.image import OUT, ROOT, Device
from image.vm import SERVED_ADDRESS
from tests.support.timing import report_retry, scaled, wait_until

sys.path.insert(0, os.path.join(ROOT, "image"))

import bootenv  # noqa: E402

pytestmark = pytest.mark.skipif(not flags.IMAGE_UPDATE_TEST.get(), reason="NNOS_IMAGE_UPDATE_TEST=1 asks for it")
PROBATION_S = 20
POST = nnos.__version__ + ".post1"       # the casync test's release: every nnos file changed
# a new slot whose loop is restarted by its watchdog fails its probation, as it must; the emulated
# device's first boot of a slot stalls for more than a second now and then (TCG): room for that
WATCHDOG_S = 5.0


@pytest.fixture(scope="module")
def bundles(image, tmp_path_factory):
    """The image's own bundle (what slot A holds), the same root as a newer version, the same
    signed by a key the device does not trust or made for another architecture, a newer one
    whose nnos crashes at start, and one squashed too loosely to fit a root slot."""
    d = str(tmp_path_factory.mktemp("bundles"))
    version = work(OUT)["version"]
    built = os.path.join(OUT, f"nnos-{version.split('+')[0]}-amd64.raucb")
    assert os.path.exists(built), os.listdir(OUT)
    own = os.path.join(d, os.path.basename(built))            # served to the device from here too
    shutil.copyfile(built, own)
    return {"own": own, "folder": d, "version": version, "newer": same_root(OUT, d, version + ".b"),
            "stranger": same_root(OUT, d, version + ".x", stranger=True),
            "other arch": same_root(OUT, d, version + ".arm64", compatible="nnos-arm64-cartpole-sim"),
            "crashing": changed_root(OUT, d, version + ".crash",
                                     {"supervisor/up.py": nnos_file(OUT, "supervisor/up.py") + CRASH}),
            "oversize": changed_root(OUT, d, version + ".big", {"supervisor/up.py": nnos_file(OUT, "supervisor/up.py")}, FAST)}


@pytest.fixture(scope="module")
def chunked(bundles):
    """A release that changes every one of nnos's files (a line added to each, a new version in
    nnos/__init__.py) as a full bundle and in casync's form: an index bundle and its chunk
    store, served side by side."""
    from bundle import convert
    from rauc_keys import signing_dir
    site = os.path.join(work(OUT)["rootfs"], SITE, "nnos")
    files = {}
    for folder, _, names in os.walk(site):
        for name in names:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), site)
                files[rel] = nnos_file(OUT, rel) + f"\n# release {POST}\n"
    files["__init__.py"] = files["__init__.py"].replace(f'__version__ = "{nnos.__version__}"', f'__version__ = "{POST}"')
    assert f'"{POST}"' in files["__init__.py"], "nnos/__init__.py names no version to change"
    version = bundles["version"] + ".c"
    plain = changed_root(OUT, bundles["folder"], version, files)
    index = os.path.join(bundles["folder"], f"{version}-casync.raucb")
    store = convert(plain, signing_dir(None)[0], index)
    return {"plain": plain, "index": index, "store": store, "version": version, "files": len(files)}


@pytest.fixture
def efi_device(image, bundles, tmp_path):
    d = Device(image, str(tmp_path), uefi=True, watchdog_s=WATCHDOG_S, served=bundles["folder"])
    yield d
    d.close()


def judged(dev: Device, slot: str) -> dict:
    """The status once the health gate judged this boot of ``slot`` (updates wait for that)."""
    return dev.wait_status(lambda s: s["update"]["available"] and s["update"]["slot"] == slot
                           and s["update"]["this_boot"], scaled(120), f"slot {slot} judged")


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
        assert "downloading" in r.stdout or not path.startswith("http"), r.stdout[-2000:]
    else:
        r = post_bundle(dev, path, reboot="now", probation_s=PROBATION_S)
        assert r.status_code == 202, r.text
        second = dev.client.post("/v1/system/update", content=b"x")          # refused before its body is read
        assert second.status_code == 409 and "already installing" in second.json()["detail"], second.text
    dev.vm.wait_for(r"init: reboot", scaled(600), after=dev.mark)
    dev.vm.wait_for(r"nnos: booting slot " + slot, scaled(120), after=dev.mark)
    dev.wait_boot(timeout=300)
    if not cli:                                    # just up: the new slot is not kept yet
        early = dev.client.post("/v1/system/update", content=b"x")
        why = early.json().get("detail", "")
        assert early.status_code == 409 and ("probation" in why or "not judged" in why), early.text
    return dev.wait_status(lambda s: s["update"]["state"] in ("good", "rolled back", "failed"),
                           scaled(PROBATION_S + 240), "the new slot's probation")


@pytest.mark.slow
def test_a_to_b_and_back_with_bad_bundles_refused(bundles, efi_device):
    dev = efi_device.boot(timeout=300)
    st = judged(dev, "A")
    assert st["update"]["version"] == bundles["version"], st["update"]
    for what, path, why in (("another key", bundles["stranger"], "refused"),
                            ("truncated", _truncated(bundles["own"], dev), "refused"),
                            ("another architecture", bundles["other arch"], "the bundle is for 'nnos-arm64-cartpole-sim'"),
                            ("larger than the slot", bundles["oversize"], "does not fit slot B")):
        r = post_bundle(dev, path)
        assert r.status_code == 202, r.text
        job = wait_job(dev, r.json()["job"], scaled(300))
        assert job["state"] == "failed" and job["error"]["status"] == 422 and why in job["error"]["detail"], (what, job)
    # declared larger than NNOS_MAX_BUNDLE_BYTES, then than the data partition's free space:
    # answered from the headers alone, before a byte of body
    assert _declared(dev, 3 << 30).startswith("HTTP/1.1 413"), "over the bundle limit"
    answer = _declared(dev, 1 << 30)
    assert answer.startswith("HTTP/1.1 507") and "bytes free" in answer, answer
    slots = dev.client.get("/v1/system/update").json()["slots"]
    assert slots["B"]["version"] is None and slots["A"]["state"] == "booted", slots      # nothing changed
    ticks = dev.status()["loop"]["ticks"]
    st = update_to(dev, bundles["newer"], "B", bundles["version"] + ".b")
    assert "good" in st["update"]["last_update"], st["update"]
    assert st["loop"]["ticks"] > 0 and not st["loop"]["failsafe"] and ticks > 0
    # back to A with the CLI, the device fetching the bundle from a server on its network
    st = update_to(dev, f"http://{SERVED_ADDRESS}/{os.path.basename(bundles['own'])}", "A", bundles["version"], cli=True)
    slots = dev.client.get("/v1/system/update").json()["slots"]
    assert slots["A"]["boot_status"] == "good" and slots["B"]["version"] == bundles["version"] + ".b", slots


def _declared(dev: Device, length: int) -> str:
    """The answer to an update whose headers declare ``length`` bytes, none of them sent."""
    token = dev.client.headers["Authorization"]
    with socket.create_connection(("127.0.0.1", dev.vm.api_port), timeout=scaled(60)) as s:
        s.sendall(f"POST /v1/system/update HTTP/1.1\r\nHost: device\r\nAuthorization: {token}\r\n"
                  f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n".encode())
        return b"".join(iter(lambda: s.recv(65536), b"")).decode(errors="replace")      # until it closes


def _truncated(path: str, dev: Device) -> str:
    out = os.path.join(dev.vm.workdir, "truncated.raucb")
    with open(path, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read(os.path.getsize(path) // 2))
    return out


@pytest.mark.slow
def test_power_cuts_during_the_install_and_during_the_new_slots_first_boot(bundles, efi_device):
    dev = efi_device.boot(timeout=300)
    judged(dev, "A")
    # the power goes in the middle of the install: slot A boots, the update failed and says why
    r = post_bundle(dev, bundles["newer"])
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    wait_until(lambda: _percent(dev.client.get(f"/v1/jobs/{job}").json()) >= 20, scaled(300),
               "the install a fifth done", 0.3, ignore=(httpx.HTTPError,))
    dev.kill()
    env = bootenv.read(dev.disk)
    assert env["B_OK"] == "0", env                               # RAUC took B out before writing it
    dev.boot(timeout=300)
    st = judged(dev, "A")
    assert st["update"]["state"] == "failed" and "cut off" in st["update"]["last_update"], st["update"]
    assert "booting slot A" in dev.vm.console()
    # the power goes during slot B's first boot: A's attempts are untouched; B boots again, is kept
    a_try = bootenv.read(dev.disk)["A_TRY"]
    dev.mark = len(dev.vm.console())
    install_from_the_dashboard(dev, bundles["newer"])            # this time as a person would
    dev.vm.wait_for(r"nnos: booting slot B", scaled(900), after=dev.mark)
    dev.vm.wait_for(r"initramfs: started", scaled(120), after=dev.mark)
    dev.kill()
    env = bootenv.read(dev.disk)
    assert env["B_TRY"] == "1" and env["A_TRY"] == a_try and env["ORDER"].startswith("B"), env
    dev.boot(timeout=300)
    st = dev.wait_status(lambda s: s["update"]["state"] in ("good", "rolled back"), scaled(PROBATION_S + 240),
                         "slot B's probation")
    assert st["update"]["slot"] == "B" and st["update"]["state"] == "good", st["update"]
    dev.kill()
    env = bootenv.read(dev.disk)
    assert env["B_TRY"] == "0" and env["A_TRY"] == a_try, env    # a good boot reset B's; A's untouched


@pytest.mark.slow
def test_a_bundle_whose_nnos_crashes_at_start_comes_back_on_the_old_slot_with_the_reason(bundles, efi_device):
    dev = efi_device.boot(timeout=300)
    judged(dev, "A")
    dev.mark = len(dev.vm.console())
    r = post_bundle(dev, bundles["crashing"], reboot="now", probation_s=PROBATION_S)
    assert r.status_code == 202, r.text
    job = r.json()["job"]

    def installed():                                                    # a failed install fails here, at once
        if "init: reboot" in dev.vm.console()[dev.mark:]:
            return "rebooting"
        j = dev.client.get(f"/v1/jobs/{job}").json()
        assert j["state"] != "failed", j
        return None
    wait_until(installed, scaled(600), "the crashing bundle installed", 1.0, ignore=(httpx.HTTPError,))
    dev.vm.wait_for(r"nnos: booting slot A", scaled(1500), after=dev.mark)
    dev.wait_boot(timeout=300)
    st = judged(dev, "A")
    console = dev.vm.console()[dev.mark:]
    assert len(re.findall(r"nnos: booting slot B", console)) == 3, console[-4000:]    # NNOS_TRIES
    assert "this nnos crashes at start" in console
    upd = st["update"]
    assert upd["state"] == "rolled back" and "did not come up healthy within its boot attempts" in upd["last_update"], upd
    slots = dev.client.get("/v1/system/update").json()["slots"]
    assert slots["B"]["boot_status"] == "bad" and slots["A"]["state"] == "booted", slots


def install_from_the_dashboard(dev: Device, bundle: str) -> None:
    """The dashboard's System panel in headless Chromium: the bundle chosen, "reboot into it"
    ticked, Install; the page shows the install's steps until the device reboots."""
    from playwright.sync_api import sync_playwright
    exe = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
    if exe is None:
        pytest.skip("chromium is not installed (./build.sh installs it)")
    token = dev.client.headers["Authorization"].split()[1]
    wait = int(scaled(60) * 1000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{dev.client.base_url}/?token={token}")
        page.wait_for_function("document.body.dataset.update && document.body.dataset.update !== 'unavailable'"
                               " && document.getElementById('upd-boot').textContent === 'committed'", timeout=wait)
        assert page.locator("#upd-slot").text_content() == "A"
        page.set_input_files("#upd-file", bundle)
        page.check("#upd-reboot")
        page.click("#upd-install")
        page.wait_for_function("document.getElementById('upd-progress').textContent.startsWith('installing ')",
                               timeout=int(scaled(600) * 1000))
        page.wait_for_function("document.getElementById('upd-progress').textContent.endsWith('rebooting…')",
                               timeout=int(scaled(600) * 1000))
        assert errors == [], errors
        browser.close()


def _percent(job: dict) -> int:
    assert job["state"] == "running", job
    m = re.match(r"installing (\d+)%", job.get("step") or "")
    return int(m.group(1)) if m else 0


@pytest.mark.slow
def test_a_casync_update_fetches_only_the_chunks_that_changed(bundles, chunked, efi_device):
    """A release changing every nnos file, as a casync bundle: uploaded, it is refused (its chunks
    are found beside its URL); given by URL, RAUC fetches the index bundle and only the chunks
    slot A does not hold (the booted slot is casync's seed) — the bytes the device downloaded,
    counted where they are served, are under a fifth of the full bundle's — and B boots the new
    nnos and is kept."""
    dev = efi_device.boot(timeout=300)
    judged(dev, "A")
    r = post_bundle(dev, chunked["index"])
    assert r.status_code == 202, r.text
    job = wait_job(dev, r.json()["job"], scaled(300))
    assert job["state"] == "failed" and "install it by URL" in job["error"]["detail"], job
    with open(dev.vm.served_log, "w"):
        pass                                                        # count from here
    url = f"http://{SERVED_ADDRESS}/{os.path.basename(chunked['index'])}"
    st = update_to(dev, url, "B", chunked["version"], cli=True)
    assert dev.client.get("/v2").json()["version"] == POST                 # the new nnos runs
    with open(dev.vm.served_log) as f:
        served = [line.split(" ", 2) for line in f.read().splitlines()]
    assert served and all(code == "200" for code, _, _ in served), served[:20]
    fetched = sum(int(n) for _, n, _ in served)
    got = sum(1 for _, _, path in served if path.endswith(".cacnk"))
    store = sum(len(names) for _, _, names in os.walk(chunked["store"]))
    full = os.path.getsize(chunked["plain"])
    print(f"casync update of {chunked['files']} changed nnos files: downloaded {fetched} bytes in {len(served)} "
          f"requests ({got} of {store} chunks) = {100 * fetched / full:.1f} % of the full bundle's {full} bytes")
    assert fetched <= full // 5 and 0 < got < store // 5, (fetched, full, got, store)
    assert sum(1 for _, _, path in served if path.endswith(".raucb")) >= 1           # the index bundle, by RAUC
    assert st["loop"]["ticks"] > 0 and not st["loop"]["failsafe"]
