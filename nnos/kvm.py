"""Whether KVM really runs guests here: /dev/kvm can exist and still hang them (as on some CI
machines), so a guest is booted with it until it prints a line, once per host boot (the
verdict is cached against the kernel's boot id). Used for the image's qemu runs and the
legacy VM. A machine that is itself emulated by QEMU without KVM (the image under TCG) offers
/dev/kvm on emulated AMD-V, and a guest there reset the whole machine (benchmarks/RESULTS.md,
the legacy VM's boot inside the image): it is not probed, the answer is no."""
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


def emulated(sys_root: str = "/sys") -> str:
    """Why this machine is itself emulated by QEMU without KVM ("" when it is not): its firmware
    says QEMU and the kernel found no KVM clock (every KVM guest's kernel offers one)."""
    try:
        with open(os.path.join(sys_root, "devices/virtual/dmi/id/sys_vendor")) as f:
            vendor = f.read().strip()
        with open(os.path.join(sys_root, "devices/system/clocksource/clocksource0/available_clocksource")) as f:
            clocks = f.read().split()
    except OSError:
        return ""
    if vendor != "QEMU" or "kvm-clock" in clocks:
        return ""
    return f"this machine is emulated by QEMU without KVM (clock sources: {' '.join(clocks)})"


def works(cache: str, cmd: list[str], ready: bytes, quiet_s: float = 20.0, limit_s: float = 120.0,
          report=None, first_s: float = 60.0) -> bool:
    """Run ``cmd`` (a qemu with -accel kvm and its serial console on stdout) until ``ready``
    appears; the verdict is kept in ``cache`` for this host boot. A guest fails the probe when it
    exits, prints nothing in its first ``first_s`` or for ``quiet_s`` after that (a hang), or is
    not ready after ``limit_s``. A slow guest that keeps printing passes (a loaded machine): a
    fixed 20 s race sent such a guest to TCG, several times slower still. ``report(text)``: how
    the probe went, when it ran (or why it did not)."""
    if not os.access("/dev/kvm", os.W_OK):
        return False
    why = emulated()
    if why:
        if report is not None:
            report(f"not tried: {why}; nested KVM under emulation is not to be trusted")
        return False
    this_boot = boot_id()
    try:
        with open(cache) as f:
            got, verdict = f.read().split()
        if got == this_boot:
            return verdict == "yes"
    except (OSError, ValueError):
        pass
    try:
        ok, how = _reaches(cmd, ready, quiet_s, limit_s, first_s)
    except OSError as e:
        ok, how = False, f"could not run {cmd[0]}: {e}"
    if report is not None:
        report(how)
    os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
    with open(cache, "w") as f:
        f.write(f"{this_boot} {'yes' if ok else 'no'}\n")
    return ok


def _reaches(cmd: list[str], ready: bytes, quiet_s: float, limit_s: float, first_s: float) -> tuple[bool, str]:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        os.set_blocking(p.stdout.fileno(), False)
        buf, lines, first = b"", 0, None
        start = heard = time.monotonic()
        while p.poll() is None:
            time.sleep(0.2)
            got = p.stdout.read() or b""
            now = time.monotonic()
            if got:
                buf, heard, lines = (buf + got)[-4096:], now, lines + got.count(b"\n")
                first = now - start if first is None else first
            if ready in buf:
                return True, f"ready after {now - start:.1f} s (its first output after {first:.1f} s, {lines} lines)"
            if first is None and now - start > first_s:
                return False, f"printed nothing in {first_s:.0f} s"
            if first is not None and now - heard > quiet_s:
                return False, f"silent for {quiet_s:.0f} s after {lines} lines ({now - start:.1f} s){_last(buf)}"
            if now - start > limit_s:
                return False, f"not ready after {limit_s:.0f} s ({lines} lines){_last(buf)}"
        buf += p.stdout.read() or b""
        if ready in buf:
            return True, f"ready after {time.monotonic() - start:.1f} s, as it exited"
        return False, f"exited ({p.returncode}) after {time.monotonic() - start:.1f} s{_last(buf)}"
    finally:
        p.kill()
        p.wait()


def _last(buf: bytes) -> str:
    tail = buf.decode(errors="replace").strip().splitlines()
    return f"; its last line: {tail[-1][-160:]}" if tail else ""
