"""mDNS/DNS-SD on real devices: two `nnos up` devices in their own network namespaces on the
fleet's bridge, one with NNOS_MDNS=1 (its supervisor runs Debian's avahi-daemon in a private
mount namespace), one with the default (off). python-zeroconf, an independent implementation,
browses `_nnos._tcp` from the host's side of the bridge: the announced device is found with
its address, port and TXT record (its device id is the one its /metrics says, its API answers
there), the other never is, and a device that stops says goodbye."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request

import pytest

from tests.support.paths import ROOT
from tests.support.timing import scaled, wait_until

sys.path.insert(0, os.path.join(ROOT, "services", "fleet"))

import fleet as fleet_mod  # noqa: E402

pytestmark = [pytest.mark.xdist_group("system"),
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("avahi-daemon"),
                                 reason="needs root (network namespaces) and avahi-daemon (./build.sh setup)")]
zeroconf = pytest.importorskip("zeroconf")
TYPE = "_nnos._tcp.local."


class Seen(zeroconf.ServiceListener):
    def __init__(self):
        self.names: dict[str, zeroconf.ServiceInfo | None] = {}
        self.removed: set[str] = set()
        self.lock = threading.Lock()

    def add_service(self, zc, type_, name):
        info = zc.get_service_info(type_, name, timeout=3000)
        with self.lock:
            self.names[name] = info

    def update_service(self, zc, type_, name):
        self.add_service(zc, type_, name)

    def remove_service(self, zc, type_, name):
        with self.lock:
            self.removed.add(name)


def _device_id(d) -> str:
    req = urllib.request.Request(d.url + "/metrics", headers={"Authorization": f"Bearer {d.scrape_token}"})
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    return re.search(r'nnos_device_info\{[^}]*device_id="([0-9a-f]+)"', text).group(1)


def test_a_device_with_mdns_on_is_found_with_its_api_and_one_without_is_not(tmp_path):
    fleet = fleet_mod.Fleet(2, str(tmp_path / "fleet"), prometheus=False, env={"NNOS_MDNS": "1"})
    fleet.devices[1].env.pop("NNOS_MDNS")                       # the default: off
    zc = None
    try:
        fleet.start(timeout=scaled(180))
        on, off = fleet.devices
        zc = zeroconf.Zeroconf(interfaces=[f"{fleet_mod.NET}.1"])
        seen = Seen()
        zeroconf.ServiceBrowser(zc, TYPE, seen)
        found = wait_until(lambda: [i for i in list(seen.names.values()) if i is not None], scaled(60),
                           "the device's _nnos._tcp announcement", 0.2,
                           context=lambda: open(os.path.join(on.data, "up.log")).read()[-2000:])
        assert len(found) == 1, [i.name for i in found]
        info = found[0]
        assert info.parsed_addresses(zeroconf.IPVersion.V4Only) == [on.address], info
        assert info.port == fleet_mod.PORT
        props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
        assert props["id"] == _device_id(on) and props["board"] == "cartpole-sim", props
        assert props["api"] == "/v1" and props["metrics"] == "/metrics" and "token" not in str(props).lower()
        assert info.server == f"nnos-{props['id'][:8]}.local."
        # what it announced answers
        url = f"http://{info.parsed_addresses()[0]}:{info.port}"
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=5) as r:
            assert r.status == 200
        # the device without the flag runs no avahi-daemon
        pids = fleet_mod.ip("netns", "pids", off.ns).stdout.split()
        names = [open(f"/proc/{p}/comm").read().strip() for p in pids if os.path.exists(f"/proc/{p}/comm")]
        assert "avahi-daemon" not in names and names, names
        # a device that stops says goodbye
        on.stop()
        wait_until(lambda: info.name in seen.removed, scaled(30), "the stopped device's goodbye", 0.2)
    finally:
        if zc is not None:
            zc.close()
        fleet.stop()


def test_without_avahi_the_announcer_says_what_to_install(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))                # no avahi-daemon on it
    r = subprocess.run([sys.executable, "-m", "nnos.supervisor.mdns", "--data", str(tmp_path / "data"), "--run",
                        str(tmp_path / "run"), "--port", "8080", "--board", "b"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "avahi-daemon is not installed" in r.stderr, r.stderr


def test_a_bad_port_is_refused_before_anything_is_announced(tmp_path):
    from nnos.supervisor import mdns
    with pytest.raises(mdns.MdnsError, match="1–65535, not 0"):
        mdns.prepare(str(tmp_path / "run"), str(tmp_path / "data"), "b", 0)
    assert not os.path.exists(tmp_path / "run" / "avahi")
