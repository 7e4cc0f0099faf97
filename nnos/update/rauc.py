"""RAUC's command line as functions: the booted slot and both slots' state, a bundle's
information, an install (with its progress), marking the booted slot good or bad. Each failure is
an UpdateError that says what RAUC said."""
from __future__ import annotations

import json
import os
import re
import subprocess
from urllib.parse import urlsplit

from .. import flags
from ..errors import NnosError

KEYRING = "/etc/rauc/keyring.pem"


class UpdateError(NnosError):
    pass


def available() -> str | None:
    """Why updates cannot run here, or None."""
    conf = flags.RAUC_CONF.get()
    if not os.path.exists(conf):
        return f"no RAUC system config ({conf}): this is not an nnos image with update slots"
    if _which("rauc") is None:
        return "rauc is not installed"
    return None


def _which(name: str) -> str | None:
    import shutil
    return shutil.which(name)


def _rauc(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["rauc", *_conf(), *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise UpdateError("rauc is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise UpdateError(f"rauc {args[0]} did not answer within {timeout:.0f} s") from e


def _conf() -> list[str]:
    """RAUC's own default is the image's config; another (NNOS_RAUC_CONF) is passed on."""
    conf = flags.RAUC_CONF.get()
    return [] if conf == flags.RAUC_CONF.default else [f"--conf={conf}"]


def said(r: subprocess.CompletedProcess) -> str:
    """RAUC's own reason (its LastError when it gives one), without its log prefixes."""
    lines = [re.sub(r"^rauc-(Message|Critical|Warning)[^:]*: [\d:.]+: ", "", ln).strip()
             for ln in (r.stderr + r.stdout).splitlines()]
    last = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("LastError:")]
    if last:
        return last[-1]
    lines = [ln for ln in lines if ln and not re.match(r"(\d+%|installing|Installing)", ln)] or lines
    return "; ".join(ln for ln in lines[-3:] if ln) or f"exit {r.returncode}"


def status() -> dict:
    """{"compatible", "booted" (A/B), "boot_primary", "slots": {A: {"device", "state", "boot_status",
    "version", ...}, B: ...}} from `rauc status`."""
    r = _rauc("status", "--detailed", "--output-format=json")
    if r.returncode != 0:
        raise UpdateError(f"rauc status failed: {said(r)}")
    raw = json.loads(r.stdout)
    slots = {}
    for entry in raw.get("slots", []):
        for name, s in entry.items():
            status_ = s.get("slot_status") or {}
            bundle = status_.get("bundle") or {}
            slots[s.get("bootname") or name] = {
                "name": name, "device": s.get("device"), "state": s.get("state"),
                "boot_status": s.get("boot_status"), "version": bundle.get("version"),
                "installed": (status_.get("installed") or {}).get("timestamp"),
                "status": status_.get("status")}
    return {"compatible": raw.get("compatible"), "booted": raw.get("booted"),
            "boot_primary": raw.get("boot_primary"), "slots": slots}


def info(bundle: str, keyring: str = KEYRING) -> dict:
    """A bundle's compatible string and version, its signature checked against ``keyring``."""
    r = _rauc("info", "--output-format=json", f"--keyring={keyring}", bundle, timeout=300)
    if r.returncode != 0:
        raise UpdateError(f"the bundle was refused: {said(r)}")
    return json.loads(r.stdout)


def too_big(info_: dict, slot: dict) -> str | None:
    """Why the bundle's images do not fit the slot (its block device), or None: said before a
    byte is written, not after RAUC ran out of room."""
    need = sum(int(v.get("size") or 0) for image in info_.get("images", []) for v in image.values())
    try:
        with open(slot["device"], "rb") as f:
            room = f.seek(0, os.SEEK_END)
    except (OSError, TypeError, KeyError) as e:
        return f"the slot's device {slot.get('device')!r} cannot be measured: {e}"
    if need > room:
        return f"the bundle's root filesystem is {need} bytes; the slot ({slot['device']}) holds {room}"
    return None


def chunked(info_: dict) -> bool:
    """A casync bundle (``rauc convert``): its images are indexes (.caibx, .caidx) whose chunks
    live in a store beside the bundle, fetched as RAUC installs it."""
    return any(str(v.get("filename", "")).endswith((".caibx", ".caidx"))
               for image in info_.get("images", []) for v in image.values())


def source(info_: dict, path: str, url: str | None) -> str:
    """What ``rauc install`` is given: the bundle's file, or — for a casync bundle — the URL it
    came from, so that RAUC finds its chunk store beside it (``NAME.castr/`` for
    ``NAME.raucb``) and fetches only the chunks the booted slot does not already hold."""
    if not chunked(info_):
        return path
    if url is None:
        raise UpdateError("this is a casync bundle: it holds only an index of the root filesystem, whose chunks "
                          "are fetched from a store beside it; install it by URL (?url=…/NAME.raucb, with "
                          "NAME.castr/ served next to it), not as an upload")
    if urlsplit(url).query or not urlsplit(url).path.endswith(".raucb"):
        raise UpdateError(f"a casync bundle's URL must end in .raucb with no query (its store is found beside "
                          f"it as NAME.castr/), got {url[:200]!r}")
    return url


def install(bundle: str, progress=lambda pct, what: None, timeout: float = 1800.0) -> None:
    """Install ``bundle`` (a file, or a casync bundle's URL: source()) into the slot not
    booted (RAUC's service does the work, at its own priority); ``progress(percent, message)``
    as RAUC reports it."""
    try:
        p = subprocess.Popen(["rauc", *_conf(), "install", "--progress", bundle], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, bufsize=1)
    except FileNotFoundError as e:
        raise UpdateError("rauc is not installed") from e
    out = []
    for line in p.stdout:
        out.append(line.rstrip())
        m = re.search(r"(\d+)%\s*(.*)", line)
        if m:
            progress(int(m.group(1)), m.group(2).strip())
    rc = p.wait(timeout)
    if rc != 0:
        raise UpdateError(f"rauc install failed: {said(subprocess.CompletedProcess(p.args, rc, '', chr(10).join(out)))}")


def mark(how: str, which: str = "booted") -> str:
    """``good``, ``bad`` or ``active`` for the ``booted`` slot or the ``other`` one (RAUC's grub
    backend: good sets OK=1 and resets TRY, bad sets OK=0, active puts it first in ORDER)."""
    r = _rauc("status", f"mark-{how}", which)
    if r.returncode != 0:
        raise UpdateError(f"rauc status mark-{how} {which} failed: {said(r)}")
    os.sync()              # GRUB's environment on the disk now: a power cut next must not undo it
    return said(r)
