"""A fleet you can run on one machine: N simulated devices — `nnos up` on the simulated
cart-pole, each in its own network namespace with its own address (10.77.0.11, .12, …) and data
directory — on one bridge, plus Prometheus (and Alertmanager) scraping them with the
configuration in services/prometheus, and an Ansible inventory for services/ansible.

    ./build.sh fleet N        # = python3 services/fleet/fleet.py up N; Ctrl-C stops all of it
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
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NET, BRIDGE, PORT = "10.77.0", "nnosfleet0", 8080
BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")
MODEL = os.path.join(ROOT, "models", "cartpole", "cartpole.onnx")


class FleetError(Exception):
    pass


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *(["-n", ns] if ns else []), *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise FleetError(f"ip {' '.join(args)}{f' (in {ns})' if ns else ''} failed: {r.stderr.strip()}")
    return r


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, token: str | None = None, timeout: float = 2.0):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Device:
    """One simulated device: `nnos up` in network namespace ``ns`` at ``address``."""

    def __init__(self, i: int, workdir: str, scrape_token: str):
        self.name, self.ns, self.address = f"dev{i}", f"nnos-fleet-{i}", f"{NET}.{10 + i}"
        self.veth = f"nnosfv{i}"
        self.data = os.path.join(workdir, self.name)
        self.url = f"http://{self.address}:{PORT}"
        self.scrape_token = scrape_token
        self.proc: subprocess.Popen | None = None

    @property
    def token(self) -> str:
        with open(os.path.join(self.data, "token")) as f:
            return f.read().strip()

    def network(self) -> None:
        ip("netns", "add", self.ns)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        ip("link", "set", self.veth, "master", BRIDGE, "up")
        ip("addr", "add", f"{self.address}/24", "dev", "eth0", ns=self.ns)
        ip("link", "set", "eth0", "up", ns=self.ns)
        ip("link", "set", "lo", "up", ns=self.ns)

    def start(self) -> None:
        os.makedirs(self.data, exist_ok=True)
        board = os.path.join(self.data, "board.toml")
        if not os.path.exists(board):
            with open(BOARD) as f, open(board, "w") as out:
                out.write(f.read().replace('model = "models/cartpole/cartpole.onnx"', f'model = "{MODEL}"'))
        token = os.path.join(self.data, "scrape_token")           # the fleet's: Prometheus holds the same
        with open(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self.scrape_token + "\n")
        env = dict(os.environ, NNOS_API_HOST="0.0.0.0", NNOS_API_PORT=str(PORT))
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-m", "nnos.cli", "up",
                                      "--data", self.data, "--board", board, "--no-status"], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.data, "up.log"), "a"),
                                     start_new_session=True)

    def ready(self) -> bool:
        try:
            return bool(get_json(self.url + "/v2/health/ready")["ready"])
        except (OSError, ValueError, KeyError):
            return False

    def online(self, on: bool) -> None:
        """Cut the device off its network (or bring it back), as a pulled cable would."""
        ip("link", "set", "eth0", "up" if on else "down", ns=self.ns)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Fleet:
    def __init__(self, n: int, workdir: str, prometheus: bool = True):
        if not 1 <= n <= 200:
            raise FleetError(f"a fleet here has 1–200 devices, not {n}")
        self.workdir = os.path.abspath(workdir)
        self.scrape_token = "nnos_scrape_" + secrets.token_urlsafe(24)
        self.devices = [Device(i, self.workdir, self.scrape_token) for i in range(1, n + 1)]
        self.want_prometheus = prometheus and shutil.which("prometheus") is not None
        self.procs: list[subprocess.Popen] = []
        self.prometheus_url: str | None = None
        self.alertmanager_url: str | None = None

    def start(self, timeout: float = 180.0) -> "Fleet":
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
    sub.add_parser("down", help="remove what a killed fleet left")
    a = ap.parse_args(argv)
    if a.cmd == "down":
        teardown()
        return 0
    fleet = Fleet(a.n, a.dir, prometheus=not a.no_prometheus)
    try:
        fleet.start()
        inv = os.path.join(fleet.workdir, "inventory.json")
        for d in fleet.devices:
            print(f"{d.name}  {d.url}  data {d.data}")
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
