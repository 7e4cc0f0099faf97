"""A fleet you can run on one machine: N simulated devices — `nnos up` on the simulated
cart-pole, or (--images K) the built image booted in qemu — each in its own network namespace
with its own address (10.77.0.11, .12, …) and data directory — on one bridge, plus Prometheus
(and Alertmanager) scraping them with the configuration in services/prometheus, and an Ansible
inventory for services/ansible.

    ./build.sh fleet N [--images K] [--mdns]   # = python3 services/fleet/fleet.py up N …; Ctrl-C stops all of it
    python3 services/fleet/fleet.py down      # what a killed run left behind

Needs root (network namespaces) and iproute2; prometheus and prometheus-alertmanager where
installed. Every address is in namespaces this makes: nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

from devices import BRIDGE, NET, PORT, ROOT, Device, FleetError, ImageDevice, free_port, get_json, ip  # noqa: F401


class Fleet:
    def __init__(self, n: int, workdir: str, prometheus: bool = True, env: dict | None = None, images: int = 0):
        """``images``: how many of the N devices (the last ones) are the built image in qemu."""
        if not 1 <= n <= 200:
            raise FleetError(f"a fleet here has 1–200 devices, not {n}")
        if not 0 <= images <= n:
            raise FleetError(f"--images must be 0–N ({n}), not {images}")
        self.workdir = os.path.abspath(workdir)
        self.scrape_token = "nnos_scrape_" + secrets.token_urlsafe(24)
        self.devices = [(ImageDevice if i > n - images else Device)(i, self.workdir, self.scrape_token, env)
                        for i in range(1, n + 1)]
        self.want_prometheus = prometheus and shutil.which("prometheus") is not None
        self.procs: list[subprocess.Popen] = []
        self.prometheus_url: str | None = None
        self.alertmanager_url: str | None = None

    def start(self, timeout: float = 180.0) -> "Fleet":
        """``timeout``: for the devices to answer (an image device under TCG takes minutes more)."""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise FleetError("a fleet needs root and iproute2 (network namespaces)")
        teardown()
        os.makedirs(self.workdir, exist_ok=True)
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{NET}.1/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for d in self.devices:
            d.network()
            d.start()
        if self.want_prometheus:
            self.start_prometheus()
        deadline = time.monotonic() + timeout
        while not all(d.ready() for d in self.devices):
            if time.monotonic() > deadline:
                raise FleetError(f"not ready within {timeout:.0f} s: {', '.join(d.name for d in self.devices if not d.ready())}")
            time.sleep(0.5)
        self.write_inventory()
        return self

    def write_inventory(self) -> str:
        """services/ansible's inventory: every device's URL and token."""
        hosts = {d.name: {"nnos_url": d.url, "nnos_token": d.token} for d in self.devices}
        path = os.path.join(self.workdir, "inventory.json")
        body = {"nnos": {"hosts": hosts, "vars": {"nnos_prometheus": self.prometheus_url or ""}}}
        with open(path, "w") as f:
            json.dump(body, f, indent=1)
        return path

    def start_prometheus(self) -> None:
        conf = os.path.join(self.workdir, "prometheus")
        shutil.rmtree(conf, ignore_errors=True)
        shutil.copytree(os.path.join(ROOT, "services", "prometheus"), conf, ignore=shutil.ignore_patterns("tests"))
        with open(os.open(os.path.join(conf, "scrape_token"), os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(self.scrape_token + "\n")
        with open(os.path.join(conf, "devices", "fleet.json"), "w") as f:
            json.dump([{"targets": [f"{d.address}:{PORT}"], "labels": {"robot": d.name}} for d in self.devices], f)
        prom, am = free_port(), free_port()
        if shutil.which("prometheus-alertmanager"):
            self.procs.append(subprocess.Popen(
                ["prometheus-alertmanager", f"--config.file={conf}/alertmanager.yml", f"--storage.path={conf}/am",
                 f"--web.listen-address=127.0.0.1:{am}", "--cluster.listen-address="],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(conf, "alertmanager.log"), "w")))
            self.alertmanager_url = f"http://127.0.0.1:{am}"
            with open(os.path.join(conf, "prometheus.yml")) as f:
                text = f.read().replace('"127.0.0.1:9093"', f'"127.0.0.1:{am}"')
            with open(os.path.join(conf, "prometheus.yml"), "w") as f:
                f.write(text)
        self.procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={conf}/prometheus.yml", f"--storage.tsdb.path={conf}/tsdb",
             f"--web.listen-address=127.0.0.1:{prom}", "--web.enable-lifecycle"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(conf, "prometheus.log"), "w")))
        self.prometheus_url = f"http://127.0.0.1:{prom}"

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for d in self.devices:
            d.stop()
        for p in self.procs:
            p.wait(30)
        teardown()


def teardown() -> None:
    """Every namespace and link a fleet made (this run's or a killed one's)."""
    for ns in ip("netns", "list", check=False).stdout.split("\n"):
        name = ns.split(" ")[0]
        if name.startswith("nnos-fleet-"):
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            ip("netns", "del", name, check=False)
    ip("link", "del", BRIDGE, check=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start N devices and Prometheus; Ctrl-C stops them")
    up.add_argument("n", type=int)
    up.add_argument("--dir", default=os.path.join(ROOT, "out", "fleet"), help="the devices' data and the inventory")
    up.add_argument("--no-prometheus", action="store_true")
    up.add_argument("--images", type=int, default=0, metavar="K",
                    help="the last K devices are the built image in qemu (./build.sh image; ≈1 GiB of memory and a "
                         "core each under TCG: 1–2 on a small machine)")
    up.add_argument("--mdns", action="store_true", help="the `nnos up` devices announce themselves (NNOS_MDNS=1)")
    sub.add_parser("down", help="remove what a killed fleet left")
    a = ap.parse_args(argv)
    if a.cmd == "down":
        teardown()
        return 0
    try:
        fleet = Fleet(a.n, a.dir, prometheus=not a.no_prometheus, images=a.images,
                      env={"NNOS_MDNS": "1"} if a.mdns else None)
    except FleetError as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 1
    try:
        fleet.start(timeout=180.0 + 600.0 * a.images)
        inv = os.path.join(fleet.workdir, "inventory.json")
        for d in fleet.devices:
            print(f"{d.name}  {d.url}  {'image in qemu, ' if isinstance(d, ImageDevice) else ''}data {d.data}")
        print(f"prometheus {fleet.prometheus_url or '(not installed)'}   inventory {inv}")
        print("ansible-playbook -i", inv, "services/ansible/rollout.yml -e model=PATH   # Ctrl-C here stops the fleet")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except FleetError as e:
        print(f"fleet: {e}", file=sys.stderr)
        return 1
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
