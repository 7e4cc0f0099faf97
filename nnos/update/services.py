"""The two processes updates need, prepared and then exec'd (each one line in the supervisor's
table): the system bus, and RAUC's service.

    python -m nnos.update.services dbus --data /data/nnos
    python -m nnos.update.services rauc

dbus: its machine id (made once in the data partition; the root filesystem is read-only) and its
run directory. rauc: the kernel modules a verity bundle needs (loop, dm-verity), the
/dev/disk/by-partlabel names system.conf uses (made here when udev has not), the boot partition
mounted read-write at /boot (GRUB's environment), RAUC's data directory; it runs at idle CPU and
I/O priority so an install never competes with the loop."""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys

from ..identity import device_id
from ..timeline import stamp

BOOT_LABEL = "boot"                     # the boot partition's GPT name (image/lib/disk.py)
MODULES = ("loop", "dm_mod", "dm_verity")
MS_REMOUNT = 32


def machine_id(data: str, run_path: str = "/run/nnos-machine-id") -> str:
    """The device's id as the machine id; /var/lib/dbus/machine-id links to ``run_path``."""
    mid = device_id(data)
    with open(run_path, "w") as f:
        f.write(mid + "\n")
    return mid


def dbus(data: str) -> None:
    machine_id(data)
    os.makedirs("/run/dbus", exist_ok=True)
    os.execvp("dbus-daemon", ["dbus-daemon", "--system", "--nofork", "--nopidfile"])


def partlabels(sysfs: str = "/sys/class/block", dev_dir: str = "/dev/disk/by-partlabel") -> dict[str, str]:
    """GPT name → /dev node for every partition; the by-partlabel links made where missing."""
    from ..boot.datapart import partitions
    found = {name: p["dev"] for name, p in partitions(sysfs).items()}
    os.makedirs(dev_dir, exist_ok=True)
    for name, node in found.items():
        link = os.path.join(dev_dir, name)
        if not os.path.exists(link):
            os.symlink(node, link)
    return found


def mount_boot(parts: dict[str, str], target: str = "/boot") -> str:
    """The boot partition read-write at ``target`` (RAUC's grub backend edits GRUB's environment there)."""
    from ..boot.datapart import mount
    # init mounted it read-only (the legacy VM's kernel lives there): made writable in place
    mount(parts[BOOT_LABEL], target, "vfat", MS_REMOUNT if os.path.ismount(target) else 0, "")
    probe = os.path.join(target, "nnos", ".rw")
    with open(probe, "w"):
        pass
    os.unlink(probe)
    return f"boot partition {parts[BOOT_LABEL]} on {target}, read-write"


def idle_priority() -> None:
    """SCHED_IDLE for the CPU, the idle class for I/O: an install takes what the loop leaves."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    libc = ctypes.CDLL(None, use_errno=True)
    ioprio_set = {"x86_64": 251, "aarch64": 30}.get(os.uname().machine)
    if ioprio_set:
        libc.syscall(ioprio_set, 1, 0, 3 << 13)          # IOPRIO_WHO_PROCESS, self, IOPRIO_CLASS_IDLE


def rauc(data_dir: str = "/data/rauc") -> None:
    r = subprocess.run(["modprobe", "-a", *MODULES], capture_output=True, text=True)
    stamp(f"rauc: {mount_boot(partlabels())}; modules {' '.join(MODULES)}"
          + (f" (modprobe: {r.stderr.strip()})" if r.returncode else ""))
    os.makedirs(data_dir, exist_ok=True)
    idle_priority()
    os.execvp("rauc", ["rauc", "service"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="nnos.update.services")
    ap.add_argument("which", choices=("dbus", "rauc"))
    ap.add_argument("--data", default="/data/nnos")
    a = ap.parse_args(argv)
    if a.which == "dbus":
        dbus(a.data)
    else:
        rauc()
    return 1                                # exec failed (it raises on failure; not reached)


if __name__ == "__main__":
    sys.exit(main())
