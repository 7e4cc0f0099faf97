"""Whether KVM really runs guests here: /dev/kvm can exist and still hang them (as on some CI
machines), so a guest is booted with it until it prints a line, once per host boot (the
verdict is cached against the kernel's boot id). Used for the image's qemu runs and the
legacy VM."""
from __future__ import annotations

import os
import subprocess
import time


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "?"


def works(cache: str, cmd: list[str], ready: bytes, timeout_s: float = 20.0) -> bool:
    """Run ``cmd`` (a qemu with -accel kvm and its serial console on stdout) until ``ready``
    appears, at most ``timeout_s``; the verdict is kept in ``cache`` for this host boot."""
    if not os.access("/dev/kvm", os.W_OK):
        return False
    this_boot = boot_id()
    try:
        with open(cache) as f:
            got, verdict = f.read().split()
        if got == this_boot:
            return verdict == "yes"
    except (OSError, ValueError):
        pass
    ok = False
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        os.set_blocking(p.stdout.fileno(), False)
        buf, end = b"", time.monotonic() + timeout_s
        while time.monotonic() < end and p.poll() is None and not ok:
            time.sleep(0.2)
            buf += p.stdout.read() or b""
            ok = ready in buf
        p.kill()
        p.wait()
    except OSError:
        ok = False
    os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
    with open(cache, "w") as f:
        f.write(f"{this_boot} {'yes' if ok else 'no'}\n")
    return ok
