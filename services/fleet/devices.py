"""The devices of services/fleet/fleet.py: `nnos up` on the simulated cart-pole in its own network
namespace (Device), or the built image booted in qemu there (ImageDevice); and the `ip` calls
that make their network."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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

    def __init__(self, i: int, workdir: str, scrape_token: str, env: dict | None = None):
        self.env = dict(env or {})                  # its flags (as its data partition's nnos.env would set them)
        self.source = ROOT                          # the nnos it runs (another release's tree: see older())
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
        env = dict(os.environ, NNOS_API_HOST="0.0.0.0", NNOS_API_PORT=str(PORT), **self.env)
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-m", "nnos.cli", "up",
                                      "--data", self.data, "--board", board, "--no-status"], cwd=self.source, env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.data, "up.log"), "a"),
                                     start_new_session=True)

    def older(self, tree: str) -> None:
        """Run the nnos release in ``tree`` (a source tree: `git archive` of a tag) instead of this one."""
        shim = os.path.join(os.path.dirname(os.path.abspath(tree)), os.path.basename(tree) + "-path")
        os.makedirs(shim, exist_ok=True)
        for name, sub in (("nnos_hardware", "hardware"), ("nnos_models", "models")):
            if not os.path.islink(os.path.join(shim, name)):
                os.symlink(os.path.join(os.path.abspath(tree), sub), os.path.join(shim, name))
        self.source = os.path.abspath(tree)
        self.env["PYTHONPATH"] = f"{shim}:{self.source}"

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


class ImageDevice(Device):
    """The built image (out/nnos-amd64.img, `./build.sh image`) booted in qemu inside the
    namespace, its API forwarded from the namespace's address: a device as it ships, its data
    partition on its own sparse copy of the disk, on the fleet's LAN (the namespace has no route
    beyond the bridge). Its card is prepared as a fleet flashes its cards: its API token (made
    here, kept beside the disk) and the fleet's scrape token on the boot partition, imported at
    its first boot (image/bootconfig.py)."""
    DISK_SIZE = 1 << 30
    EXTRA = "nnos.legacy_vm=off nnos.loop_watchdog_s=5 nnos.loop_budget=0.90"     # an emulated device's stalls

    def start(self) -> None:
        os.makedirs(self.data, exist_ok=True)
        disk = os.path.join(self.data, "disk.img")
        if not os.path.exists(disk):
            image = os.path.join(ROOT, "out", "nnos-amd64.img")
            if not os.path.exists(image):
                raise FleetError(f"an image device needs the built image ({image}): ./build.sh image")
            subprocess.run(["cp", "--sparse=always", image, disk], check=True)
            os.truncate(disk, self.DISK_SIZE)
            self.prepare_card(disk)
        cmd = [sys.executable, os.path.join(ROOT, "image", "vm.py"), "--disk", disk, "--host", self.address,
               "--port", str(PORT), "--workdir", self.data, "--extra", self.EXTRA, "--lan"]
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], cwd=ROOT, stderr=subprocess.STDOUT,
                                     stdout=open(os.path.join(self.data, "console.log"), "a"), start_new_session=True)

    def prepare_card(self, disk: str) -> None:
        """The tokens on the card's boot partition; the API token's copy where Device.token reads it."""
        sys.path.insert(0, ROOT)
        from image import bootconfig
        token = bootconfig.new_token(disk)
        bootconfig.write(disk, "scrape_token", (self.scrape_token + "\n").encode())
        with open(os.open(os.path.join(self.data, "token"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(token + "\n")
