"""The device's network, brought up in the background at boot (the loop never waits for it).

Default: DHCP (busybox udhcpc, which keeps renewing) on the first Ethernet interface that
appears. A static address comes from the data partition's config/network.toml:

    interface = "eth0"              # optional: default the first non-loopback interface
    address = "192.168.1.50/24"     # absent: DHCP
    gateway = "192.168.1.1"         # optional
    dns = ["192.168.1.1"]           # optional

    python -m nnos.boot.network --config /data/config/network.toml
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import time
import tomllib

from ..timeline import stamp

SYS_NET = "/sys/class/net"
DHCP_SCRIPT = "/usr/lib/nnos/udhcpc.script"
WAIT_S = 30.0


class NetworkConfigError(ValueError):
    pass


def load_config(path: str) -> dict:
    """The config file, validated: {} (DHCP on the first interface) when it does not exist."""
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise NetworkConfigError(f"{path}: not valid TOML: {e}") from e
    known = {"interface", "address", "gateway", "dns"}
    unknown = set(cfg) - known
    if unknown:
        raise NetworkConfigError(f"{path}: unknown keys {sorted(unknown)}; expected {sorted(known)}")
    try:
        if "address" in cfg:
            ipaddress.ip_interface(cfg["address"])
            if "/" not in cfg["address"]:
                raise ValueError("needs a prefix length, e.g. 192.168.1.50/24")
        if "gateway" in cfg:
            ipaddress.ip_address(cfg["gateway"])
        for d in cfg.get("dns", []):
            ipaddress.ip_address(d)
    except (ValueError, TypeError) as e:
        raise NetworkConfigError(f"{path}: {e}") from e
    if "gateway" in cfg and "address" not in cfg:
        raise NetworkConfigError(f"{path}: a gateway needs a static address")
    return cfg


def interfaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir(SYS_NET) if n != "lo" and os.path.exists(os.path.join(SYS_NET, n, "device")))
    except FileNotFoundError:
        return []


def commands(cfg: dict, iface: str) -> list[list[str]]:
    """The ip(8) commands for a static configuration."""
    cmds = [["ip", "link", "set", iface, "up"], ["ip", "addr", "replace", cfg["address"], "dev", iface]]
    if "gateway" in cfg:
        cmds.append(["ip", "route", "replace", "default", "via", cfg["gateway"], "dev", iface])
    return cmds


def say(msg: str) -> None:
    stamp(msg, sys.stderr)          # the supervisor logs its children's stderr and echoes it to the console


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnos.boot.network")
    ap.add_argument("--config", required=True)
    a = ap.parse_args(argv)
    subprocess.run(["ip", "link", "set", "lo", "up"])
    try:
        cfg = load_config(a.config)
    except NetworkConfigError as e:
        say(f"network: {e}; using DHCP")
        cfg = {}
    end = time.monotonic() + WAIT_S
    while True:
        found = interfaces()
        iface = cfg.get("interface") or (found[0] if found else None)
        if iface and iface in found:
            break
        if time.monotonic() > end:
            say(f"network: no interface {cfg.get('interface') or ''} after {WAIT_S:.0f} s; the device runs offline")
            return 0
        time.sleep(0.1)
    if "address" in cfg:
        for cmd in commands(cfg, iface):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                say(f"network: {' '.join(cmd)}: {r.stderr.strip()}")
                return 1
        if cfg.get("dns"):
            with open("/run/resolv.conf", "w") as f:
                f.write("".join(f"nameserver {d}\n" for d in cfg["dns"]))
        say(f"network: {iface} {cfg['address']} (static)")
        return 0
    # DHCP: udhcpc forks into the background once it has a lease (or after the first tries) and
    # keeps renewing; its script configures the interface and prints the address on the console
    subprocess.run(["ip", "link", "set", iface, "up"])
    os.execvp("busybox", ["busybox", "udhcpc", "-b", "-t", "5", "-T", "2", "-i", iface, "-s", DHCP_SCRIPT,
                          "-x", "hostname:" + os.uname().nodename])


if __name__ == "__main__":
    sys.exit(main())
