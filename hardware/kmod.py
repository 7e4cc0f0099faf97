"""Kernel modules a board needs that nothing loads by itself — a virtual device (``vivid``, the
kernel's virtual camera), a bus driver without a hotplug event — named in the board's
``[board] modules = [...]`` and loaded by the loop process before it opens the devices.

A module that is already loaded (or built in) is left alone; one that does not load is logged
and the board's devices that need it are then missing: the loop fails safe and says which.
"""
from __future__ import annotations

import os
import re
import subprocess

NAME = re.compile(r"[a-z0-9_-]{1,64}")


def loaded(name: str) -> bool:
    return os.path.isdir(f"/sys/module/{name.replace('-', '_')}")


def load(names: list[str], log) -> list[str]:
    """modprobe each of ``names`` not loaded yet; the ones that failed."""
    failed = []
    for name in names:
        if loaded(name):
            continue
        import shutil
        modprobe = shutil.which("modprobe") or "/sbin/modprobe"
        try:
            r = subprocess.run([modprobe, name], capture_output=True, text=True, timeout=60)
            ok, why = r.returncode == 0, (r.stderr or r.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, why = False, str(e)
        log(f"loop: kernel module {name} " + ("loaded" if ok else f"did not load: {why or 'modprobe failed'}"))
        if not ok:
            failed.append(name)
    return failed
