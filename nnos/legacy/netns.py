"""The legacy VM's network: a namespace of its own, joined to the host by one veth pair and
NATed out through whatever uplink the host has. The host itself is unreachable from it.

    host                                   namespace nnos-legacy
    nnlg0 10.213.77.1/30  <--- veth --->   nnlg1 10.213.77.2/30, default via .1
                                           qemu (user networking: the guest's 10.0.2.2 is
                                           this namespace's own loopback, where nothing listens)

nftables table ``inet nnos_legacy``: anything arriving on nnlg0 for the host itself is refused
(the control plane and every host service, on any address); nothing new may enter the
namespace from outside; what leaves it is masqueraded. The switch is the host end of the
pair: down = cut (the namespace keeps its address and route, and nothing gets out).
Needs root (CAP_NET_ADMIN), ``ip`` (iproute2) and ``nft`` (nftables).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

from ..errors import NnosError

NS = "nnos-legacy"
HOST_IF, NS_IF = "nnlg0", "nnlg1"
HOST_ADDR, NS_ADDR, SUBNET = "10.213.77.1", "10.213.77.2", "10.213.77.0/30"
TABLE = "nnos_legacy"

RULES = f"""
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname "{HOST_IF}" counter reject with icmpx type admin-prohibited
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        oifname "{HOST_IF}" ct state established,related accept
        oifname "{HOST_IF}" counter drop
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        ip saddr {SUBNET} oifname != "{HOST_IF}" masquerade
    }}
}}
"""


class NetworkError(NnosError):
    pass


def unavailable() -> str | None:
    """Why the namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to make its network namespace"
    missing = [t for t in ("ip", "nft") if shutil.which(t) is None]
    if missing:
        return f"needs {' and '.join(missing)} (iproute2, nftables) to make its network namespace"
    return None


def _run(*cmd: str, stdin: str | None = None) -> str:
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetworkError(f"{' '.join(cmd)}: {e}") from e
    if r.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def exists() -> bool:
    return os.path.exists(f"/run/netns/{NS}")


def uplink_up() -> bool | None:
    """Whether the host end is up; None when there is no pair."""
    try:
        r = subprocess.run(["ip", "-j", "link", "show", HOST_IF], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    try:
        return "UP" in json.loads(r.stdout)[0].get("flags", [])
    except (ValueError, IndexError, AttributeError):
        return None


def setup(uplink: bool) -> None:
    """Make (or repair) the namespace, the pair, the rules; set the switch. Idempotent: every
    piece is applied again each time, so a setup cut short (the VM stopped while it ran) is
    finished by the next one rather than left with a namespace end that is down."""
    why = unavailable()
    if why:
        raise NetworkError(why)
    if not exists():
        _run("ip", "netns", "add", NS)
    _run("ip", "-n", NS, "link", "set", "lo", "up")
    if not _pair_exists():
        # one end without the other (the namespace made anew, say) is stale: the pair is remade
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True, timeout=10)
        subprocess.run(["ip", "-n", NS, "link", "del", NS_IF], capture_output=True, timeout=10)
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF, "netns", NS)
    _run("ip", "addr", "replace", f"{HOST_ADDR}/30", "dev", HOST_IF)
    _run("ip", "-n", NS, "addr", "replace", f"{NS_ADDR}/30", "dev", NS_IF)
    _run("ip", "-n", NS, "link", "set", NS_IF, "up")
    _default_route()
    _run("nft", "-f", "-", stdin=RULES)
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1\n")
    switch(uplink)


def _pair_exists() -> bool:
    """Both ends: the host's here, the other in the namespace."""
    r = subprocess.run(["ip", "-n", NS, "link", "show", NS_IF], capture_output=True, timeout=10)
    return r.returncode == 0 and uplink_up() is not None


def switch(on: bool) -> None:
    """Cut (False) or restore (True) the namespace's way out: the host end of the pair. The
    namespace end stays up and its route in place, so nothing but this link decides."""
    _run("ip", "link", "set", HOST_IF, "up" if on else "down")
    if on:     # the route goes with the carrier on some kernels: put it back
        _default_route()


def _default_route() -> None:
    """The namespace's default route through the host end, "onlink": it does not depend on the
    connected route of the pair's subnet, which the kernel restores only once the carrier is
    back (a route added in between failed with "Nexthop has invalid gateway" on the image)."""
    _run("ip", "-n", NS, "route", "replace", "default", "via", HOST_ADDR, "dev", NS_IF, "onlink")


def state() -> str:
    """"on", "off", or "unavailable: why" — what GET /v1/vm shows."""
    up = uplink_up()
    if up is None:
        return f"unavailable: {unavailable() or 'its namespace is not set up (the VM has not started with it)'}"
    return "on" if up else "off"


def exec_prefix() -> list[str]:
    return ["ip", "netns", "exec", NS]


def teardown() -> None:
    for cmd in (["nft", "delete", "table", "inet", TABLE], ["ip", "link", "del", HOST_IF], ["ip", "netns", "del", NS]):
        subprocess.run(cmd, capture_output=True, timeout=10)
