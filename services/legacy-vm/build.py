"""Build the legacy VM's guest: a kernel + a busybox initramfs with the agents.

    python3 services/legacy-vm/build.py [--out out/legacy-vm]     (./build.sh legacy-vm)
    python3 services/legacy-vm/build.py --out DIR --kernel-root ROOTFS --busybox ROOTFS/bin/busybox

The first (development hosts, the tests) takes Debian's cloud kernel; the second (the image's
step 45) the image's own kernel and busybox, so the device carries no second kernel and the
guest matches the device's architecture. Outputs OUT/vmlinuz and OUT/initrd.img (≈ 1 MB): no
disk, no shared filesystem — the only way out is the virtio-serial port to the broker (and a
network only when the host enables it).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from image.lib.modules import initramfs  # noqa: E402

KERNEL_META = "linux-image-cloud-amd64"


def kernel_deb(cache: str) -> str:
    os.makedirs(cache, exist_ok=True)
    deps = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True, text=True, check=True).stdout
    pkg = next(line.split()[-1] for line in deps.splitlines() if "Depends: linux-image-" in line)
    found = glob.glob(os.path.join(cache, f"{pkg}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", "-q", pkg], cwd=cache, check=True, capture_output=True)
        found = glob.glob(os.path.join(cache, f"{pkg}_*.deb"))
    return found[0]


def static_busybox(path: str | None) -> str:
    path = path or shutil.which("busybox")
    with open(path or "/dev/null", "rb") as f:
        dynamic = b"ld-linux" in f.read(8192)        # an ELF interpreter: not the static build
    if path is None or dynamic:
        raise SystemExit(f"a static busybox is needed (busybox-static; got {path})")
    return path


def build(out: str, cache: str, kernel_root: str | None = None, busybox: str | None = None,
          kernel: bool = True) -> dict:
    """OUT/initrd.img, and OUT/vmlinuz unless ``kernel`` is False (the image boots the guest
    with its own kernel from the boot partition)."""
    busybox = static_busybox(busybox)
    with tempfile.TemporaryDirectory() as tmp:
        kroot = kernel_root
        if kroot is None:
            kroot = os.path.join(tmp, "kernel")
            subprocess.run(["dpkg", "-x", kernel_deb(cache), kroot], check=True)
        kver = os.listdir(os.path.join(kroot, "lib", "modules"))[0]
        subprocess.run(["depmod", "-b", kroot, kver], check=True)
        ir = os.path.join(tmp, "initramfs")
        for d in ("bin", "dev", "proc", "sys", "run", "tmp", "etc", "agents"):
            os.makedirs(os.path.join(ir, d))
        shutil.copy(busybox, os.path.join(ir, "bin", "busybox"))
        shutil.copy(os.path.join(HERE, "guest", "init"), os.path.join(ir, "init"))
        shutil.copy(os.path.join(HERE, "guest", "udhcpc.script"), os.path.join(ir, "etc", "udhcpc.script"))
        for f in os.listdir(os.path.join(HERE, "guest", "agents")):
            shutil.copy(os.path.join(HERE, "guest", "agents", f), os.path.join(ir, "agents", f))
        initramfs(kroot, os.path.join(HERE, "guest", "modules.txt"), ir)
        os.makedirs(out, exist_ok=True)
        files = subprocess.run(["sh", "-c", "find . -print0 | sort -z"], cwd=ir, capture_output=True, check=True).stdout
        cpio = subprocess.run(["cpio", "--null", "-o", "-H", "newc", "--quiet", "--reproducible"], cwd=ir, input=files,
                              capture_output=True, check=True).stdout
        gz = subprocess.run(["gzip", "-9n"], input=cpio, capture_output=True, check=True).stdout
        with open(os.path.join(out, "initrd.img.part"), "wb") as f:
            f.write(gz)
        os.replace(os.path.join(out, "initrd.img.part"), os.path.join(out, "initrd.img"))
        if kernel:
            shutil.copy(glob.glob(os.path.join(kroot, "boot", "vmlinuz-*"))[0], os.path.join(out, "vmlinuz"))
    sizes = {k: os.path.getsize(os.path.join(out, k)) for k in ("vmlinuz", "initrd.img") if kernel or k != "vmlinuz"}
    print(f"legacy VM guest: kernel {kver}" + (f" {sizes['vmlinuz'] >> 10} KiB" if kernel else " (not copied)") +
          f", initramfs {sizes['initrd.img'] >> 10} KiB in {out}")
    return sizes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="build.sh legacy-vm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "out", "legacy-vm"))
    ap.add_argument("--kernel-root", help="a tree with boot/vmlinuz-* and lib/modules/ (the image's root)")
    ap.add_argument("--busybox", help="the static busybox to use (default: this host's)")
    ap.add_argument("--no-kernel", action="store_true", help="only the initramfs (the kernel is found elsewhere)")
    a = ap.parse_args(argv)
    build(a.out, os.path.join(REPO, "out", "cache", "legacy-vm"), a.kernel_root, a.busybox, not a.no_kernel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
