"""The legacy VM with its outside network, under `nnos up` with the control plane listening on
every address (as on the device): its agents upload telemetry to, and fetch a model offer
from, a stand-in cloud in a namespace of the test's own; from inside the guest the control
plane is unreachable on every host address; the offer waits in quarantine until accepted and
activated locally; cutting and restoring the network over the API works at once and the loop
never notices. Root only (network namespaces, nftables)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from nnos.legacy import netns
from nnos.legacy import settings as vm_settings
from tests.support.netfix import Cloud, host_addresses
from tests.support.timing import wait_until
from tests.support.paths import GUEST, ROOT


pytestmark = [pytest.mark.xdist_group("image"), pytest.mark.usefixtures("vm_namespace"),
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or shutil.which("busybox") is None,
                                 reason="needs qemu-system-x86 and busybox-static (./build.sh installs them)"),
              pytest.mark.skipif(netns.unavailable() is not None, reason=f"{netns.unavailable()}")]


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)


def dashboard_switches_the_network(url: str, token: str) -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/?token={token}")
            page.wait_for_function("document.body.dataset.vmState === 'running'", timeout=20000)
            assert page.locator("#vm").is_visible()
            page.wait_for_function("document.body.dataset.vmNetwork === 'on'", timeout=20000)
            page.click("#vm-cut")
            page.wait_for_function("document.body.dataset.vmNetwork === 'off'", timeout=20000)
            assert netns.state() == "off"
            page.click("#vm-restore")
            page.wait_for_function("document.body.dataset.vmNetwork === 'on'", timeout=20000)
            assert netns.state() == "on"
        finally:
            browser.close()


def wait(cond, timeout, what, log=lambda: ""):
    return wait_until(cond, timeout, what, 0.5, context=lambda: log()[-3000:])


def probes(data: str, since: float = 0.0) -> dict[str, str]:
    """The probe agent's latest verdict per URL (from the guest log the broker writes), after ``since``."""
    out = {}
    try:
        lines = open(os.path.join(data, "logs", "legacy-vm-guest.log")).read().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        stamp, _, rest = line.partition(" ")
        if "probe " not in rest or time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) < since:
            continue
        url, verdict = rest.split("probe ", 1)[1].rsplit(" ", 1)
        out[url] = verdict
    return out


def test_cloud_yes_host_never_offer_quarantined_network_switch(guest, tmp_path):
    from tests.support.up import free_port
    from tests.support.policies import policy_variant
    from tests.support.up import Up
    cloud = Cloud(str(tmp_path / "cloud"))
    shutil.copy(policy_variant(tmp_path, "offer", scale=0.9), os.path.join(cloud.root, "offer.onnx"))
    open(os.path.join(cloud.root, "ping"), "w").write("pong\n")
    port = free_port()
    data = tmp_path / "data"
    host_urls = [f"http://{a}:{port}/v1/status" for a in ["10.0.2.2", *host_addresses()] if a != "127.0.0.1"]
    vm_settings.save(str(data), network=True, agents=["telemetry", "update", "probe"], interval_s=2,
                     telemetry_url=cloud.url("telemetry"), offer_url=cloud.url("offer.onnx"),
                     probe_urls=[cloud.url("ping"), *host_urls])
    up = Up(data, api_port=port, env={"NNOS_LEGACY_VM": GUEST, "NNOS_API_HOST": "0.0.0.0"})
    try:
        url = up.wait_for_api(60)
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {up.token}"}, timeout=120)
        active0 = c.get("/v1/status").json()["loop"]["active"]
        # on once the VM's start has made its namespace (the pair stays down until the rules are in)
        wait(lambda: c.get("/v1/vm").json()["network"] == "on", 60, "the VM's network on", lambda: up.log)
        # 1. telemetry reaches the cloud: the device's status, read through the channel
        post = wait(lambda: cloud.posts(), 150, "a telemetry upload", lambda: up.log)[0]
        status = json.loads(post)["status"]
        assert status["ok"]
        assert status["result"]["loop"]["mode"] == "running"
        # 2. from inside the guest: the cloud answers, the control plane on every host address never does
        seen = wait(lambda: p if len(p := probes(up.data)) == len(host_urls) + 1 else None, 90,
                    "every probe reported", lambda: up.log)
        assert seen[cloud.url("ping")] == "reachable", seen
        assert all(seen[u] == "unreachable" for u in host_urls), seen
        assert httpx.get(f"http://127.0.0.1:{port}/v1/status").status_code == 401     # it is listening
        # 3. the offer waits in quarantine; nothing but a local accept + activation moves it
        prop = wait(lambda: c.get("/v1/vm/proposals").json()["proposals"], 90, "the offer proposed", lambda: up.log)[0]
        time.sleep(3)
        assert c.get("/v1/status").json()["loop"]["active"] == active0
        ctl = subprocess.run([sys.executable, "-m", "nnos.cli", "ctl", "vm", "accept", prop["id"], "--url", url,
                              "--token", up.token], capture_output=True, text=True, cwd=ROOT, timeout=180)
        assert ctl.returncode == 0, ctl.stderr
        mid = json.loads(ctl.stdout)["id"]
        assert c.get("/v1/status").json()["loop"]["active"] == active0                  # stored, not active
        r = c.post(f"/v1/models/{mid}/activate")
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "active", r.text
        assert c.get("/v1/status").json()["loop"]["active"] == mid
        # 4. cut: at once, over the API; the loop does not notice
        for attempt in range(3):
            c0, _ = up.counters()
            r = c.post("/v1/vm/network", json={"enabled": False})
            assert r.status_code == 200, r.text
            assert r.json()["network"] == "off", r.text
            cut_at = time.time() + 1
            n_posts = len(cloud.posts())
            wait(lambda: probes(up.data, cut_at).get(cloud.url("ping")) == "unreachable", 60, "the cloud cut off",
                 lambda: up.log)
            time.sleep(5)
            assert len(cloud.posts()) <= n_posts + 1                 # at most one already under way
            vm = c.get("/v1/vm").json()
            assert vm["network"] == "off"
            assert vm["network_setting"] == "off"
            assert vm["state"] == "running"
            assert vm_settings.load(up.data)["network"] is False
            c1, _ = up.counters()
            assert c1["mode"] == "running"
            assert c1["ticks"] > c0["ticks"] + 100
            assert c1["failsafe_entries"] == c0["failsafe_entries"]
            if c1["misses"] == c0["misses"]:
                break
            # a 20 ms stall of this 2-vCPU host inside the window (one clean-clone run in four had
            # one): restore and cut again; a miss the switch caused would be in every window
            from tests.support.timing import report_retry
            report_retry("test_guest_network (cut window)", f"{c1['misses'] - c0['misses']} missed tick(s); cut again")
            assert c.post("/v1/vm/network", json={"enabled": True}).status_code == 200
            back = time.time() + 1
            wait(lambda: probes(up.data, back).get(cloud.url("ping")) == "reachable", 60, "the cloud back", lambda: up.log)
        else:
            raise AssertionError(f"the loop missed ticks in every network-cut window: {c0} → {c1}")
        # 5. restored
        ctl = subprocess.run([sys.executable, "-m", "nnos.cli", "ctl", "vm", "network", "on", "--url", url,
                              "--token", up.token], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert ctl.returncode == 0, ctl.stderr
        assert json.loads(ctl.stdout)["network"] == "on", ctl.stderr
        back_at = time.time() + 1
        wait(lambda: probes(up.data, back_at).get(cloud.url("ping")) == "reachable", 60, "the cloud back",
             lambda: up.log)
        wait(lambda: len(cloud.posts()) > n_posts + 1, 60, "uploads again", lambda: up.log)
        # 6. the same switch from the dashboard, in a real browser (where Chromium is installed)
        if CHROMIUM:
            dashboard_switches_the_network(url, up.token)
    finally:
        up.proc.send_signal(signal.SIGTERM)
        up.proc.wait(30)
        cloud.close()
