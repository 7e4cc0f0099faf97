"""Update bundles for the image's update tests, made from the built image's root filesystem
(out/work-amd64): the same root as another version, signed by a key the device does not trust,
or with some of nnos's files changed (an nnos that crashes at start, one with a new plan format).
They are made as a release would be (image/bundle.py, RAUC checks each); a changed root is
squashed with the image's own options (image/steps/70-disk.sh), or lz4's (``FAST``: quicker, and
larger than a root slot holds)."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support.paths import ROOT

sys.path.insert(0, os.path.join(ROOT, "image"))
sys.path.insert(0, os.path.join(ROOT, "image", "lib"))

from bundle import make  # noqa: E402
from rauc_keys import make_dev_keys, signing_dir  # noqa: E402

SITE = "usr/local/lib/python3.11/dist-packages"
IMAGE = ["-comp", "zstd", "-Xcompression-level", "15", "-b", "256K", "-no-fragments"]   # as image step 70
FAST = ["-comp", "lz4"]
# appended to supervisor/up.py: an nnos that crashes at start (its slot fails every boot attempt)
CRASH = """

def _up(*args, **kwargs):                   # an update test's bundle: an nnos that crashes at start
    raise RuntimeError("this nnos crashes at start (a test bundle)")
"""


def work(out: str, arch: str = "amd64") -> dict:
    """The built image's root (squashfs and directory), compatible string and version."""
    w = os.path.join(out, f"work-{arch}")
    with open(os.path.join(w, "compatible")) as f:
        compatible = f.read().strip()
    with open(os.path.join(w, "version")) as f:
        version = f.read().strip()
    return {"sqfs": os.path.join(w, "root.sqfs"), "rootfs": os.path.join(w, "rootfs"),
            "compatible": compatible, "version": version}


def same_root(out: str, folder: str, version: str, stranger: bool = False, compatible: str | None = None) -> str:
    """The image's own root as bundle ``version``, signed by the development key, or by a key of
    its own (``stranger``) that the device's keyring does not hold; for ``compatible`` devices
    (default: the image's)."""
    w = work(out)
    keys = make_dev_keys(os.path.join(folder, "stranger-keys"), "a stranger") if stranger else signing_dir(None)[0]
    path = os.path.join(folder, f"{version}.raucb")
    make(w["sqfs"], compatible or w["compatible"], version, keys, path)
    return path


def changed_root(out: str, folder: str, version: str, files: dict[str, str], squash: list[str] = IMAGE) -> str:
    """The image's root with ``files`` (a path under nnos's package → its new text) replaced, as
    bundle ``version``. Their compiled .pyc go with them (Python compiles the new text)."""
    w = work(out)
    pseudo, exclude = [], []
    for i, (rel, text) in enumerate(sorted(files.items())):
        path = f"{SITE}/nnos/{rel}"
        if not os.path.exists(os.path.join(w["rootfs"], path)):
            raise FileNotFoundError(f"{path} is not in the image's root filesystem")
        src = os.path.join(folder, f"changed-{i}.py")
        with open(src, "w") as f:
            f.write(text)
        pseudo += ["-p", f"{path} f 644 0 0 cat {src}"]
        folder_, name = os.path.split(path)
        pyc = f"{folder_}/__pycache__/{name[:-3]}.cpython-311.pyc"
        exclude += [path] + ([pyc] if os.path.exists(os.path.join(w["rootfs"], pyc)) else [])
    sqfs = os.path.join(folder, f"{version}.sqfs")
    # -e takes the rest of the command line: it comes last
    subprocess.run(["mksquashfs", w["rootfs"], sqfs, *squash, "-noappend", "-quiet", "-no-progress",
                    *pseudo, "-e", *exclude], check=True, stdout=subprocess.DEVNULL)
    bundle = os.path.join(folder, f"{version}.raucb")
    make(sqfs, w["compatible"], version, signing_dir(None)[0], bundle)
    os.unlink(sqfs)
    return bundle


def nnos_file(out: str, rel: str) -> str:
    """The text of one of nnos's files as the image holds it."""
    with open(os.path.join(work(out)["rootfs"], SITE, "nnos", rel)) as f:
        return f.read()
