"""Network fixtures for the legacy VM's tests (root only): a stand-in cloud in a namespace of
the test's own, reached from the VM's namespace through the host's NAT like any outside
server; and the VM's namespace removed afterwards, with the host's forwarding setting put back."""
from __future__ import annotations

import os
import subprocess
import time
import sys

from nnos.legacy import netns

CLOUD_NS, CLOUD_HOST_IF, CLOUD_NS_IF = "nnos-t-cloud", "nnct0", "nnct1"
CLOUD_HOST_ADDR, CLOUD_ADDR, CLOUD_PORT = "10.213.78.1", "10.213.78.2", 8000
HERE = os.path.dirname(os.path.abspath(__file__))


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Cloud:
    def __init__(self, root: str):
        self.root = root
        self.log = os.path.join(root, "posts.jsonl")
        os.makedirs(root, exist_ok=True)
        self.close(quiet=True)
        sh("ip", "netns", "add", CLOUD_NS)
        sh("ip", "link", "add", CLOUD_HOST_IF, "type", "veth", "peer", "name", CLOUD_NS_IF, "netns", CLOUD_NS)
        sh("ip", "addr", "add", f"{CLOUD_HOST_ADDR}/30", "dev", CLOUD_HOST_IF)
        sh("ip", "link", "set", CLOUD_HOST_IF, "up")
        sh("ip", "-n", CLOUD_NS, "addr", "add", f"{CLOUD_ADDR}/30", "dev", CLOUD_NS_IF)
        sh("ip", "-n", CLOUD_NS, "link", "set", CLOUD_NS_IF, "up")
        sh("ip", "-n", CLOUD_NS, "link", "set", "lo", "up")
        sh("ip", "-n", CLOUD_NS, "route", "add", "default", "via", CLOUD_HOST_ADDR)
        self.proc = subprocess.Popen(["ip", "netns", "exec", CLOUD_NS, sys.executable, os.path.join(HERE, "cloud_server.py"),
                                      CLOUD_ADDR, str(CLOUD_PORT), root, self.log], stdout=subprocess.PIPE)
        assert self.proc.stdout.readline().strip() == b"serving"

    def url(self, name: str) -> str:
        return f"http://{CLOUD_ADDR}:{CLOUD_PORT}/{name}"

    def posts(self) -> list[str]:
        import json
        try:
            with open(self.log) as f:
                return [json.loads(x)["body"] for x in f]
        except FileNotFoundError:
            return []

    def close(self, quiet: bool = False) -> None:
        if not quiet:
            self.proc.kill()
            self.proc.wait()
        for cmd in (["ip", "link", "del", CLOUD_HOST_IF], ["ip", "netns", "del", CLOUD_NS]):
            subprocess.run(cmd, capture_output=True)


class VmNet:
    """Removes the VM's namespace and rules before and after, restoring ip_forward."""

    def __init__(self):
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            self.forward = f.read().strip()
        netns.teardown()

    def close(self) -> None:
        netns.teardown()
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write(self.forward + "\n")


def reaches_from_vm_ns(host: str, port: int, seconds: float = 20.0) -> bool:
    """Whether a TCP connect from the VM's namespace gets through, waiting (up to a deadline
    scaled to this machine's load) while the answer is a transient one: under load, the first
    neighbour resolution after switching on can fail (a loaded run got EHOSTUNREACH, 113)."""
    from tests.support.timing import scaled
    deadline = time.monotonic() + scaled(seconds)
    while True:
        got = connect_from_vm_ns(host, port)
        if got == "connected":
            return True
        if got not in ("timeout", "OSError 113") or time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def connect_from_vm_ns(host: str, port: int, timeout: float = 2.0) -> str:
    """'connected', 'refused', 'timeout' or another error, for a TCP connect made inside the
    VM's namespace."""
    code = ("import socket,sys\ns=socket.socket();s.settimeout(%r)\ntry:\n s.connect((%r,%d));print('connected')\n"
            "except ConnectionRefusedError:print('refused')\nexcept socket.timeout:print('timeout')\n"
            "except OSError as e:print(type(e).__name__, e.errno)") % (timeout, host, port)
    r = subprocess.run([*netns.exec_prefix(), sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=timeout + 10)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()]
