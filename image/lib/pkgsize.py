"""What a set of Debian packages takes in the root filesystem: their files still present after
trimming, unpacked and as squashfs (zstd 15, as step 70 packs the root).

    python3 pkgsize.py ROOTFS OUT.json PACKAGE...
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile


def files_of(rootfs: str, package: str) -> list[str]:
    paths = []
    for lst in glob.glob(os.path.join(rootfs, "var/lib/dpkg/info", f"{package}.list")) + \
            glob.glob(os.path.join(rootfs, "var/lib/dpkg/info", f"{package}:*.list")):
        with open(lst) as f:
            paths += [line.strip() for line in f if line.strip()]
    return paths


def main(rootfs: str, out: str, packages: list[str]) -> int:
    present, seen = [], set()
    for p in packages:
        for path in files_of(rootfs, p):
            full = rootfs + path
            real = os.path.realpath(full)
            if os.path.islink(full) or not os.path.isfile(full) or real in seen:
                continue
            seen.add(real)
            present.append(path)
    unpacked = sum(os.path.getsize(rootfs + p) for p in present)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out))) as tmp:
        tree = os.path.join(tmp, "tree")
        for p in present:
            dst = tree + p
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.link(rootfs + p, dst)
        sq = os.path.join(tmp, "part.sqfs")
        subprocess.run(["mksquashfs", tree, sq, "-comp", "zstd", "-Xcompression-level", "15", "-b", "256K", "-no-fragments",
                        "-noappend", "-quiet", "-no-progress"], check=True, stdout=subprocess.DEVNULL)
        squashed = os.path.getsize(sq)
    found = [p for p in packages if files_of(rootfs, p)]
    result = {"packages": found, "files": len(present), "unpacked_bytes": unpacked, "squashfs_bytes": squashed}
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    mb = 1 << 20
    print(f"the C compiler: {len(found)} packages, {len(present)} files, {unpacked / mb:.1f} MiB unpacked, "
          f"{squashed / mb:.1f} MiB as squashfs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
