"""./build.sh flash on real block devices (loop devices over files): writes, syncs, verifies,
and refuses the dangerous targets before writing a byte."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from image.flash import FlashError, flash, root_disk_sysfs

MiB = 1 << 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("losetup") is None,
                                reason="loop devices need root and losetup")


@pytest.fixture
def loops():
    made = []

    def make(path: str, size: int, content: bytes = b"") -> str:
        with open(path, "wb") as f:
            f.write(content)
            f.truncate(size)
        r = subprocess.run(["losetup", "-f", "--show", path], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"no loop device here: {r.stderr.strip()}")
        made.append(r.stdout.strip())
        return made[-1]
    yield make
    for dev in made:
        subprocess.run(["umount", dev], capture_output=True)
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_writes_and_verifies_by_reading_back(tmp_path, loops):
    image = tmp_path / "nnos.img"
    data = os.urandom(9 * MiB + 4096)
    image.write_bytes(data)
    old = os.urandom(16 * MiB)
    dev = loops(str(tmp_path / "card"), 16 * MiB, old)
    said = []
    digest = flash(str(image), dev, say=said.append)
    with open(dev, "rb") as f:
        back = f.read()
    assert back[:len(data)] == data
    assert back[len(data):] == old[len(data):]
    assert len(digest) == 64
    assert any("verified" in s for s in said)


def test_refuses_dangerous_targets_before_writing(tmp_path, loops):
    image = tmp_path / "nnos.img"
    image.write_bytes(os.urandom(2 * MiB))
    (tmp_path / "plain-file").write_bytes(bytes(4 * MiB))
    with pytest.raises(FlashError, match="not a block device"):
        flash(str(image), str(tmp_path / "plain-file"))
    with pytest.raises(FlashError, match="No such file"):
        flash(str(image), str(tmp_path / "nothing-here"))
    # mounted
    dev = loops(str(tmp_path / "mounted"), 8 * MiB)
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    os.makedirs(tmp_path / "mnt")
    subprocess.run(["mount", dev, str(tmp_path / "mnt")], check=True)
    with pytest.raises(FlashError, match="is mounted"):
        flash(str(image), dev)
    subprocess.run(["umount", str(tmp_path / "mnt")], check=True)
    assert open(tmp_path / "mounted", "rb").read(MiB) != image.read_bytes()[:MiB]     # nothing written
    # too large for a card without --force; too small for the image
    big = loops(str(tmp_path / "big"), 64 * MiB)
    with pytest.raises(FlashError, match="--force"):
        flash(str(image), big, max_bytes=32 * MiB)
    flash(str(image), big, max_bytes=32 * MiB, force=True, say=lambda s: None)
    small = loops(str(tmp_path / "small"), 1 * MiB)
    with pytest.raises(FlashError, match="smaller than the image"):
        flash(str(image), small)
    # the disk holding / (when / is on a block device here at all)
    root = root_disk_sysfs()
    if root is not None:
        node = "/dev/" + os.path.basename(root)
        if os.path.exists(node):
            with pytest.raises(FlashError, match="root filesystem|is mounted"):
                flash(str(image), node)
