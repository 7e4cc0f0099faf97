"""The legacy VM's settings, kept in DATA/legacy-vm.json (written atomically; a damaged file
is set aside and the defaults used, said in the log).

    network        bool   its outside network (namespace + NAT; never the host): off by default
    agents         list   which agents of the guest run
    telemetry_url  str    where the telemetry agent POSTs ("" = nowhere)
    offer_url      str    where the update agent fetches a model offer ("" = nowhere)
    probe_urls     list   the connectivity agent's targets (it reports each as reachable or not)
    interval_s     int    the agents' period
    cpu_percent    int    its CPU cap (cgroup v2 cpu.max; a share of one CPU)
    memory_mb      int    its guest RAM (qemu -m); the host cap adds qemu's own overhead
    watchdog_s     int    restarted when the guest sends nothing for this long (it pings every quarter)
    start_grace_s  int    how long after a start its first ping may take (a guest under TCG inside
                          an emulated device needs minutes)

Changes apply at the VM's next start, except ``network``, which is switched at once.
"""
from __future__ import annotations

import json
import os
import re

from ..errors import NnosError
from ..fsutil import atomic_write

FILE = "legacy-vm.json"
AGENTS = ("telemetry", "update", "probe", "ping", "hog", "hostile")
DEFAULTS = {"network": False, "agents": ["telemetry", "update"], "telemetry_url": "", "offer_url": "",
            "probe_urls": [], "interval_s": 60, "cpu_percent": 25, "memory_mb": 128, "watchdog_s": 120,
            "start_grace_s": 300}
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[!-~]*)?$")    # printable, no spaces or commas in the host


class SettingsError(NnosError):
    pass


def _url(key: str, v) -> str:
    if not isinstance(v, str) or (v and (len(v) > 512 or not _URL.match(v) or "," in v)):
        raise SettingsError(f"{key} must be an http(s) URL of at most 512 printable characters without "
                            f"spaces or commas (or empty), got {v!r}")
    return v


def _int(key: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SettingsError(f"{key} must be a whole number from {lo} to {hi}, got {v!r}")
    return v


def validate(s: dict) -> dict:
    """A complete, checked copy of ``s`` (missing keys take the defaults)."""
    if not isinstance(s, dict):
        raise SettingsError(f"legacy VM settings must be a JSON object, got {type(s).__name__}")
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise SettingsError(f"unknown legacy VM settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **s}
    if not isinstance(out["network"], bool):
        raise SettingsError(f"network must be true or false, got {out['network']!r}")
    if not isinstance(out["agents"], list) or any(a not in AGENTS for a in out["agents"]):
        raise SettingsError(f"agents must be a list drawn from {list(AGENTS)}, got {out['agents']!r}")
    out["telemetry_url"] = _url("telemetry_url", out["telemetry_url"])
    out["offer_url"] = _url("offer_url", out["offer_url"])
    if not isinstance(out["probe_urls"], list) or len(out["probe_urls"]) > 8:
        raise SettingsError(f"probe_urls must be a list of at most 8 URLs, got {out['probe_urls']!r}")
    out["probe_urls"] = [_url("probe_urls[]", u) for u in out["probe_urls"]]
    _int("interval_s", out["interval_s"], 1, 86400)
    _int("cpu_percent", out["cpu_percent"], 1, 100)
    _int("memory_mb", out["memory_mb"], 48, 4096)
    _int("watchdog_s", out["watchdog_s"], 10, 3600)
    _int("start_grace_s", out["start_grace_s"], 30, 3600)
    return out


def path(data: str) -> str:
    return os.path.join(data, FILE)


def load(data: str, log=lambda msg: None) -> dict:
    try:
        with open(path(data)) as f:
            return validate(json.load(f))
    except FileNotFoundError:
        return dict(DEFAULTS)
    except (OSError, ValueError, SettingsError) as e:
        bad = path(data) + ".bad"
        try:
            os.replace(path(data), bad)
        except OSError:
            pass
        log(f"legacy VM settings unreadable ({e}); set aside as {bad}, defaults used")
        return dict(DEFAULTS)


def save(data: str, **changes) -> dict:
    """Validate the current settings with ``changes`` applied and write them atomically."""
    new = validate({**load(data), **changes})
    os.makedirs(data, exist_ok=True)
    atomic_write(path(data), (json.dumps(new, indent=1) + "\n").encode())
    return new


def kernel_settings(s: dict) -> dict:
    """What the guest reads from its kernel command line (nnos.KEY=VALUE; lists comma-joined)."""
    return {"telemetry_url": s["telemetry_url"], "offer_url": s["offer_url"],
            "probe_urls": ",".join(s["probe_urls"]), "interval": s["interval_s"],
            "heartbeat": max(2, s["watchdog_s"] // 4)}
