"""nnos-init's pieces that run without a VM: the network config, the partition table reading,
the boot timeline format."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from nnos.boot import datapart, network
from nnos.timeline import parse, stamp


def test_network_config_is_validated(tmp_path):
    assert network.load_config(str(tmp_path / "absent.toml")) == {}
    good = tmp_path / "net.toml"
    good.write_text('interface = "eth0"\naddress = "192.168.1.50/24"\ngateway = "192.168.1.1"\ndns = ["1.1.1.1"]\n')
    cfg = network.load_config(str(good))
    assert network.commands(cfg, "eth0") == [["ip", "link", "set", "eth0", "up"],
                                             ["ip", "addr", "replace", "192.168.1.50/24", "dev", "eth0"],
                                             ["ip", "route", "replace", "default", "via", "192.168.1.1", "dev", "eth0"]]
    for text, why in (('address = "192.168.1.500/24"', "192.168.1.500"),
                      ('address = "192.168.1.50"', "prefix length"),
                      ('gateway = "10.0.0.1"', "needs a static address"),
                      ('addres = "10.0.0.2/8"', "unknown keys"),
                      ('address = ', "not valid TOML")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text + "\n")
        with pytest.raises(network.NetworkConfigError, match=why):
            network.load_config(str(bad))


def test_timeline_lines_parse_back(capsys):
    import sys
    stamp("loop: first tick (model abc, mode running)", sys.stdout)
    out = capsys.readouterr().out
    (t, ev), = parse("noise\n" + out + "[   1.0] kernel line\n")
    assert ev == "loop: first tick (model abc, mode running)"
    assert t > 0


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk")
def test_table_entry_reads_the_gpt_by_name(tmp_path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    script = ('label: gpt\nstart=2048, size=20480, name="root-a"\n'
              'start=22528, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="nnos-data"\n')
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, text=True, check=True)
    assert datapart.table_entry(str(disk), "nnos-data") == (2, 22528, 20480)
    with pytest.raises(datapart.DataPartitionError, match="no partition 'root-b'"):
        datapart.table_entry(str(disk), "root-b")


def test_partitions_are_found_by_gpt_name_in_sysfs(tmp_path):
    # the kernel's view: /sys/class/block/NAME/{uevent,partition,start,size}, links into the disk
    disk = tmp_path / "devices" / "vda"
    for n, (name, start) in enumerate((("root-a", 2048), ("nnos-data", 22528)), 1):
        p = disk / f"vda{n}"
        p.mkdir(parents=True)
        (p / "uevent").write_text(f"DEVTYPE=partition\nDEVNAME=vda{n}\nPARTNAME={name}\n")
        (p / "partition").write_text(f"{n}\n")
        (p / "start").write_text(f"{start}\n")
        (p / "size").write_text("20480\n")
    (disk / "uevent").write_text("DEVTYPE=disk\nDEVNAME=vda\n")
    cls = tmp_path / "class"
    cls.mkdir()
    for d in ("vda", "vda1", "vda2"):
        os.symlink(disk if d == "vda" else disk / d, cls / d)
    got = datapart.partitions(str(cls))
    assert set(got) == {"root-a", "nnos-data"}
    assert got["nnos-data"] == {"dev": "/dev/vda2", "disk": "/dev/vda", "number": 2, "start": 22528 * 512,
                                "size": 20480 * 512}


def _ext4(path) -> str:
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4 (e2fsprogs)")
    with open(path, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^metadata_csum_seed", str(path)], check=True)
    return str(path)


def test_a_cleanly_unmounted_data_partition_is_not_fscked_one_that_needs_it_is(tmp_path):
    """Boots skip e2fsck when the superblock says the filesystem is clean; errors, a journal to
    recover (a power cut), a mount count or check interval due each make it run, named."""
    img = _ext4(tmp_path / "data.img")
    assert datapart.needs_check(img) is None
    assert datapart.check(img) == (True, "clean")
    subprocess.run(["tune2fs", "-c", "3", "-C", "3", img], check=True, capture_output=True)
    assert datapart.needs_check(img) == "mounted 3 times since its last check"
    assert datapart.check(img)[0] and datapart.needs_check(img) is None     # e2fsck ran and reset it
    subprocess.run(["debugfs", "-w", "-R", "ssv state 3", img], check=True, capture_output=True)
    assert datapart.needs_check(img) == "errors were recorded on it"
    assert datapart.check(img)[0] and datapart.needs_check(img) is None
    subprocess.run(["debugfs", "-w", "-R", "feature needs_recovery", img], check=True, capture_output=True)
    assert datapart.needs_check(img) == "not cleanly unmounted: its journal needs recovery"
    with open(img, "r+b") as f:                       # not ext4 at all
        f.seek(1024 + 0x38)
        f.write(b"\0\0")
    assert datapart.needs_check(img) == "no ext4 superblock"
    assert datapart.needs_check(str(tmp_path / "missing")).startswith("its superblock cannot be read")


def test_a_filesystem_smaller_than_its_partition_is_grown_and_a_missing_tool_is_said(tmp_path):
    """Regression (Debian 13 has no resizepart: the data partition fell back to RAM): a filesystem
    an earlier boot did not grow is grown to its partition; a tool that is not installed is a
    failed step, never an exception."""
    img = _ext4(tmp_path / "data.img")
    assert datapart.fs_bytes(img) == 32 << 20
    said = []
    assert not datapart.grow_fs(img, said.append)                    # as large as its partition
    os.truncate(img, 128 << 20)
    subprocess.run(["e2fsck", "-fy", img], check=True, capture_output=True)    # offline resize asks for it
    assert datapart.grow_fs(img, said.append), said
    assert datapart.fs_bytes(img) == 128 << 20 and said == ["data: filesystem grown from 32 to 128 MiB"]
    assert datapart.fs_bytes(str(tmp_path / "missing")) is None
    r = datapart._run("nnos-no-such-tool", "x")
    assert r.returncode == 127 and "not installed" in r.stderr


def test_a_power_cut_leaves_the_journal_to_recover_and_the_check_runs(tmp_path):
    """A copy of the partition taken while it is mounted and written is what a power cut leaves."""
    img = _ext4(tmp_path / "data.img")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-o", "loop", img, str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("loop devices cannot be mounted here")
    try:
        (mnt / "model").write_bytes(b"x" * 4096)
        os.sync()
        shutil.copy(img, tmp_path / "cut.img")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert datapart.needs_check(img) is None                # unmounted cleanly
    cut = str(tmp_path / "cut.img")
    assert datapart.needs_check(cut) == "not cleanly unmounted: its journal needs recovery"
    assert datapart.check(cut) == (True, "clean")           # e2fsck replayed the journal (exit 0)
    assert datapart.needs_check(cut) is None
