"""image/bootconfig.py: config put on a built image's boot partition without mounting it — what
a builder does to a card before its first boot. Checked as the device checks it; the booted
device's side is in test_boot.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import BOARDS, ROOT

from image import bootconfig  # noqa: E402 - the repository is on the path (tests/support)

TOOL = os.path.join(ROOT, "image", "bootconfig.py")


def tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True)


@pytest.fixture
def disk(image, tmp_path):
    path = str(tmp_path / "disk.img")
    subprocess.run(["cp", "--sparse=always", image["img"], path], check=True)
    return path


def test_put_list_read_and_remove_on_the_boot_partition(disk, tmp_path):
    assert bootconfig.listdir(disk) == ["README.txt"]               # the image's note on the folder
    assert b"board.toml" in bootconfig.read(disk, "README.txt")
    board = open(os.path.join(BOARDS, "cartpole-sim.toml"), "rb").read()
    (tmp_path / "b.toml").write_bytes(board)
    r = tool(disk, "put", "board.toml", str(tmp_path / "b.toml"))
    assert r.returncode == 0 and b"imported at its next boot" in r.stdout, r.stderr
    bootconfig.write(disk, "hostname", b"arm-3\n")
    assert tool(disk).stdout.decode().split() == ["README.txt", "board.toml", "hostname"]
    assert tool(disk, "cat", "board.toml").stdout == board
    bootconfig.write(disk, "hostname", b"arm-4\n")                 # replaced
    assert bootconfig.read(disk, "hostname") == b"arm-4\n"
    assert tool(disk, "rm", "hostname").returncode == 0
    assert bootconfig.listdir(disk) == ["README.txt", "board.toml"]
    # a token made here and put there: the builder knows it before the device ever booted
    r = tool(disk, "new-token")
    token = r.stdout.decode().strip()
    assert r.returncode == 0 and token.startswith("nnos_") and len(token) >= 5 + 43, r
    assert bootconfig.read(disk, "token") == (token + "\n").encode()
    scrape = bootconfig.new_token(disk, "scrape_token")
    assert scrape.startswith("nnos_scrape_") and bootconfig.read(disk, "scrape_token").strip() == scrape.encode()
    assert tool(disk, "new-token", "board.toml").returncode == 1


def test_what_the_device_would_refuse_is_refused_here(disk, tmp_path):
    (tmp_path / "bad.toml").write_text('[board]\nname = "x"\nrate_hz = "fast"\n')
    r = tool(disk, "put", "board.toml", str(tmp_path / "bad.toml"))
    err = r.stderr.decode()
    assert r.returncode == 1 and "board.toml would be refused by the device" in err and "rate_hz must be a number" in err
    with pytest.raises(bootconfig.BootConfigToolError, match="not a config file nnos reads"):
        bootconfig.write(disk, "board.toml.txt", b"")
    with pytest.raises(bootconfig.BootConfigToolError, match="is not a host name"):
        bootconfig.write(disk, "hostname", b"my robot")
    assert bootconfig.listdir(disk) == ["README.txt"]               # nothing was written
    assert tool(disk, "put", "board.toml").returncode == 2           # a command's arguments missing: the usage
    r = tool(str(tmp_path / "bad.toml"), "cat", "hostname")          # not a disk
    assert r.returncode == 1 and b"no partition table" in r.stderr, r.stderr
