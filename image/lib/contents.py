"""What the image holds, as JSON for the build summary and the manifest.

    python3 contents.py WORK ROOTFS BOARD MODEL
"""
from __future__ import annotations

import json
import os
import subprocess
import sys


def du(path: str) -> int:
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0] or 0)


def main(work: str, rootfs: str, board: str, model: str) -> dict:
    with open(os.path.join(rootfs, "var/lib/dpkg/status")) as f:
        packages = f.read().count("Status: install ok installed")
    with open(os.path.join(work, "requirements.txt")) as f:
        python = [line.strip() for line in f if line.strip()]
    with open(os.path.join(work, "partitions.json")) as f:
        parts = json.load(f)
    with open(os.path.join(work, "plan_id")) as f:
        plan_id = f.read().strip()
    dirs = ["usr/lib/modules", "usr/local/lib", "usr/lib/python3.11", "usr/lib/python3.13", "usr/lib/x86_64-linux-gnu",
            "usr/lib/aarch64-linux-gnu", "usr/share", "usr/bin", "usr/sbin", "usr/lib/udev", "etc", "var"]
    largest = {d: du(os.path.join(rootfs, d)) for d in dirs if os.path.exists(os.path.join(rootfs, d))}
    kernel = sorted(os.listdir(os.path.join(rootfs, "usr/lib/modules")))
    cpu = {}
    if os.path.exists(os.path.join(work, "compiler.json")):      # step 48: the cpu backend's compiler
        with open(os.path.join(work, "compiler.json")) as f:
            cpu = json.load(f)
        with open(os.path.join(rootfs, "etc/nnos/cpu-target")) as f:
            cpu["target"] = f.read().strip()
        prebuilt = os.path.join(rootfs, "usr/lib/nnos/cpu")
        cpu["prebuilt_objects"] = sorted(os.listdir(prebuilt)) if os.path.isdir(prebuilt) else []
    return {"partitions": parts, "rootfs_bytes": du(rootfs), "squashfs_bytes": os.path.getsize(os.path.join(work, "root.sqfs")),
            "kernel_bytes": os.path.getsize(os.path.join(work, "boot/vmlinuz")),
            "initramfs_bytes": os.path.getsize(os.path.join(work, "boot/initrd.img")),
            "debian_packages": packages, "python_packages": python, "kernel": kernel[0] if kernel else None,
            "largest": dict(sorted(largest.items(), key=lambda kv: -kv[1])), "board": os.path.basename(board),
            "model": os.path.basename(model) if model != "board" else "the board's model", "plan_id": plan_id,
            "cpu_backend": cpu}


if __name__ == "__main__":
    json.dump(main(*sys.argv[1:]), sys.stdout, indent=1)
