"""The device on its local network by name: its API announced as DNS-SD service `_nnos._tcp`
over mDNS by Debian's avahi-daemon, when the data partition's nnos.env sets NNOS_MDNS=1 (off by
default). One line in the supervisor's table:

    python -m nnos.supervisor.mdns --data /data/nnos --port 8080 --board NAME

It writes avahi's configuration (no D-Bus, no workstation record, host name nnos-ID) and one
static service (TXT: the device id, board, nnos version, where the API and /metrics are) under
RUN/avahi, then gives avahi-daemon a private mount namespace in which that directory is
/etc/avahi/services and its own run directory is /run/avahi-daemon — the root filesystem is
read-only on the device, and on a laptop nothing outside nnos's run directory is touched — and
execs it. A Prometheus or an operator's `avahi-browse -r _nnos._tcp` finds every device without an
inventory; the token is never announced."""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import sys
from xml.sax.saxutils import escape

from .. import __version__
from ..boot.datapart import mount
from ..identity import device_id

SERVICE_TYPE = "_nnos._tcp"
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x00020000, 4096, 16384, 1 << 18
SERVICES_DIR, RUN_DIR = "/etc/avahi/services", "/run/avahi-daemon"


class MdnsError(Exception):
    pass


def txt(data: str, board: str) -> dict[str, str]:
    """What a browser learns before it connects (never a secret)."""
    return {"id": device_id(data), "board": board, "version": __version__, "api": "/v1", "metrics": "/metrics"}


def host_name(data: str) -> str:
    return "nnos-" + device_id(data)[:8]


def service_xml(data: str, board: str, port: int) -> str:
    records = "".join(f"\n    <txt-record>{escape(k)}={escape(v)}</txt-record>" for k, v in txt(data, board).items())
    return (f'<?xml version="1.0" standalone="no"?>\n<!DOCTYPE service-group SYSTEM "avahi-service.dtd">\n'
            f"<service-group>\n  <name>nnos {escape(board)} {device_id(data)[:8]}</name>\n  <service>\n"
            f"    <type>{SERVICE_TYPE}</type>\n    <port>{port}</port>{records}\n  </service>\n</service-group>\n")


def daemon_conf(data: str) -> str:
    return (f"[server]\nhost-name={host_name(data)}\nuse-ipv4=yes\nuse-ipv6=yes\nenable-dbus=no\n"
            "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n\n[publish]\npublish-workstation=no\npublish-hinfo=no\npublish-addresses=yes\n"
            "\n[reflector]\nenable-reflector=no\n\n[rlimits]\n")


def prepare(run: str, data: str, board: str, port: int) -> str:
    """RUN/avahi/{avahi-daemon.conf, services/nnos.service, run/}; returns the config's path."""
    if not 1 <= port <= 65535:
        raise MdnsError(f"the API port to announce must be 1–65535, not {port}")
    base = os.path.join(run, "avahi")
    for sub in ("services", "run"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    with open(os.path.join(base, "services", "nnos.service"), "w") as f:
        f.write(service_xml(data, board, port))
    conf = os.path.join(base, "avahi-daemon.conf")
    with open(conf, "w") as f:
        f.write(daemon_conf(data))
    return conf


def private_mounts(base: str) -> None:
    """This process (and the avahi-daemon it becomes) sees RUN/avahi where avahi looks; nobody else does."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        e = ctypes.get_errno()
        raise MdnsError(f"a private mount namespace for avahi-daemon needs root (unshare: {os.strerror(e)})")
    mount("none", "/", "", MS_REC | MS_PRIVATE)
    mount(os.path.join(base, "services"), SERVICES_DIR, "", MS_BIND)
    mount(os.path.join(base, "run"), RUN_DIR, "", MS_BIND)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True, help="nnos's run directory (RUN/avahi is written)")
    ap.add_argument("--port", type=int, required=True, help="the API's port")
    ap.add_argument("--board", required=True, help="the board's name (announced)")
    a = ap.parse_args(argv)
    daemon = shutil.which("avahi-daemon")
    try:
        if daemon is None:
            raise MdnsError("NNOS_MDNS is set but avahi-daemon is not installed (Debian: apt install avahi-daemon)")
        conf = prepare(a.run, a.data, a.board, a.port)
        private_mounts(os.path.dirname(conf))
    except (MdnsError, OSError) as e:
        print(f"mdns: {e}", file=sys.stderr)
        return 2
    print(f"mdns: announcing {SERVICE_TYPE} port {a.port} as {host_name(a.data)}.local", file=sys.stderr, flush=True)
    os.execv(daemon, [daemon, "-f", conf, "--no-chroot", "--no-rlimits", "--no-proc-title"])
    return 1


if __name__ == "__main__":
    sys.exit(main())
