"""./build.sh flash on real block devices (loop devices over files): writes, syncs, verifies,
puts the first boot's config on the card's boot partition, and refuses the dangerous targets
(and config the device would refuse) before writing a byte."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from image import bootconfig
from image.flash import FlashError, flash, main, read_config, root_disk_sysfs

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


def gpt_with_a_boot_partition(path) -> bytes:
    """A small disk laid out as the image's: GPT, a FAT partition named "boot" with nnos/config/."""
    fat = str(path) + ".fat"
    subprocess.run(["mkfs.vfat", "-C", "-n", "NNOSBOOT", fat, str(8 * 1024)], check=True, capture_output=True)
    subprocess.run(["mmd", "-i", fat, "::/nnos", "::/nnos/config"], check=True)
    with open(path, "wb") as f:
        f.truncate(12 * MiB)
    subprocess.run(["sfdisk", "-q", str(path)], check=True, text=True, capture_output=True,
                   input='label: gpt\nstart=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="boot"\n')
    with open(path, "r+b") as f, open(fat, "rb") as src:
        f.seek(MiB)
        f.write(src.read())
    return open(path, "rb").read()


def image_and_config(tmp_path, files: dict[str, bytes]):
    """A small image laid out as nnos's, and a --config folder holding ``files``."""
    image = tmp_path / "nnos.img"
    gpt_with_a_boot_partition(image)
    config = tmp_path / "config"
    config.mkdir()
    for name, data in files.items():
        (config / name).write_bytes(data)
    return image, config


def test_the_first_boots_config_goes_on_the_cards_boot_partition(tmp_path, loops):
    image, config = image_and_config(tmp_path, {"network.toml": b'address = "192.168.7.50/24"\n',
                                                "hostname": b"arm-3\n"})
    dev = loops(str(tmp_path / "card"), 16 * MiB)
    said = []
    flash(str(image), dev, say=said.append, config=read_config(str(config)))
    assert bootconfig.listdir(dev) == ["hostname", "network.toml"]
    assert bootconfig.read(dev, "hostname") == b"arm-3\n"
    assert bootconfig.read(dev, "network.toml") == b'address = "192.168.7.50/24"\n'
    assert "flash: network.toml put on the boot partition: imported at the first boot" in said, said


def test_config_the_device_would_refuse_stops_the_flash_before_a_byte(tmp_path, loops, capsys):
    image, config = image_and_config(tmp_path, {"hostname": b"arm-3\n", "network.toml": b'gateway = "10.0.0.1"\n'})
    card = tmp_path / "card"
    dev = loops(str(card), 16 * MiB)
    with pytest.raises(FlashError, match="a gateway needs a static address; nothing was written"):
        read_config(str(config))
    assert main([dev, "--image", str(image), "--config", str(config)]) == 2
    assert "network.toml would be refused by the device" in capsys.readouterr().err
    (config / "network.toml").unlink()
    (config / "board.toml.txt").write_bytes(b"")
    assert main([dev, "--image", str(image), "--config", str(config)]) == 2
    assert "board.toml.txt: not a config file nnos reads" in capsys.readouterr().err
    assert open(card, "rb").read() == bytes(16 * MiB)                 # nothing written
