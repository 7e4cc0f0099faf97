"""Make a signed RAUC update bundle (verity format) from a root filesystem squashfs.

    python3 image/bundle.py --rootfs-image out/work-amd64/root.sqfs --compatible nnos-amd64-cartpole-sim \\
        --version 0.2.0+20261204 --signing-key DIR --out nnos-0.2.0-amd64.raucb

DIR holds key.pem, cert.pem and ca.pem (image/lib/rauc_keys.py). ``--casync`` also writes the
chunked form (``rauc convert``): NAME-casync.raucb, an index bundle of a few hundred KiB, and
NAME-casync.castr/, its chunk store; serve both side by side and a device given the index
bundle's URL fetches only the chunks its booted slot does not hold. The bundle carries the image
alone; the device's own /etc/rauc/system.conf says where it goes (the root slot not booted) and
its post-install handler puts the new kernel on the boot partition. ``rauc info`` checks it
against the keyring after it is made.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile


def manifest(compatible: str, version: str, image: str) -> str:
    return (f"[update]\ncompatible={compatible}\nversion={version}\n"
            f"description=nnos {version}\n\n[bundle]\nformat=verity\n\n"
            f"[image.rootfs]\nfilename={os.path.basename(image)}\n")


def make(rootfs_image: str, compatible: str, version: str, signing: str, out: str) -> dict:
    """Build and check the bundle; returns what ``rauc info`` says of it."""
    with tempfile.TemporaryDirectory(prefix="nnos-bundle-") as d:
        content = os.path.join(d, "content")
        os.makedirs(content)
        subprocess.run(["cp", "--reflink=auto", rootfs_image, os.path.join(content, "root.img")], check=True)
        with open(os.path.join(content, "manifest.raucm"), "w") as f:
            f.write(manifest(compatible, version, "root.img"))
        tmp = out + ".part"
        if os.path.exists(tmp):
            os.unlink(tmp)
        r = subprocess.run(["rauc", "bundle", f"--cert={signing}/cert.pem", f"--key={signing}/key.pem",
                            f"--keyring={signing}/ca.pem", content, tmp], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"rauc bundle failed: {r.stderr.strip() or r.stdout.strip()}")
    info = subprocess.run(["rauc", "info", "--output-format=json", f"--keyring={signing}/ca.pem", tmp],
                          capture_output=True, text=True)
    if info.returncode != 0:
        raise SystemExit(f"rauc info refused the bundle just made: {info.stderr.strip()}")
    os.replace(tmp, out)
    import json
    got = json.loads(info.stdout)
    print(f"bundle {out}: {os.path.getsize(out) >> 20} MiB, compatible {got.get('compatible')}, version {got.get('version')}")
    return got


def convert(bundle: str, signing: str, out: str) -> str:
    """The casync form of ``bundle`` at ``out`` (its chunk store beside it: OUT minus .raucb plus
    .castr); the store's path."""
    store = out[: -len(".raucb")] + ".castr" if out.endswith(".raucb") else out + ".castr"
    for old in (out, store):
        subprocess.run(["rm", "-rf", old], check=True)
    r = subprocess.run(["rauc", "convert", f"--cert={signing}/cert.pem", f"--key={signing}/key.pem",
                        f"--keyring={signing}/ca.pem", f"--signing-keyring={signing}/ca.pem", bundle, out],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"rauc convert failed: {r.stderr.strip() or r.stdout.strip()}")
    print(f"casync bundle {out}: {os.path.getsize(out) >> 10} KiB; its chunk store {store}")
    return store


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rootfs-image", required=True, help="the root filesystem as squashfs")
    ap.add_argument("--compatible", required=True, help="what the device's system.conf says (nnos-ARCH-BOARD)")
    ap.add_argument("--version", required=True)
    ap.add_argument("--signing-key", required=True, metavar="DIR", help="key.pem, cert.pem, ca.pem")
    ap.add_argument("--out", required=True)
    ap.add_argument("--casync", action="store_true", help="also write OUT-casync.raucb and its chunk store")
    a = ap.parse_args(argv)
    make(a.rootfs_image, a.compatible, a.version, a.signing_key, a.out)
    if a.casync:
        convert(a.out, a.signing_key, a.out[: -len(".raucb")] + "-casync.raucb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
