"""The data partition: the only writable storage on the device (models, the active pointer,
config, the API token, logs). Found by its GPT name, checked, and mounted at boot; created when
it is missing or unreadable (defaults are restored on top by init), and grown to the end of the
disk when the disk is larger than the image that was flashed onto it.
"""
from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import time

LABEL = "nnos-data"
ROOT_LABELS = ("root-a", "root-b")
MIN_GROW = 64 << 20          # grow when at least this much of the disk lies unused after it
SECTOR = 512
MS_NOATIME = 1024
EXT4_MAGIC, EXT4_VALID_FS, EXT4_ERROR_FS, INCOMPAT_RECOVER = 0xEF53, 1, 2, 0x4

# the C library Python runs on, as dlopen(NULL) finds it: ctypes.util.find_library runs ldconfig
# (gcc when that fails) and imports shutil, ≈ 0.1 s at the very start of an emulated boot
_libc = ctypes.CDLL(None, use_errno=True)


class DataPartitionError(Exception):
    pass


def mount(source: str, target: str, fstype: str, flags: int = 0, options: str = "") -> None:
    os.makedirs(target, exist_ok=True)
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, options.encode() or None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {source} on {target} ({fstype}): {os.strerror(e)}")


def partitions(sysfs: str = "/sys/class/block") -> dict[str, dict]:
    """GPT name → {dev, disk, number, start, size (bytes)} for every partition the kernel knows."""
    out = {}
    for name in sorted(os.listdir(sysfs)):
        base = os.path.join(sysfs, name)
        try:
            with open(os.path.join(base, "uevent")) as f:
                ev = dict(line.strip().split("=", 1) for line in f if "=" in line)
            if ev.get("DEVTYPE") != "partition" or "PARTNAME" not in ev:
                continue
            with open(os.path.join(base, "partition")) as f:
                number = int(f.read())
            with open(os.path.join(base, "start")) as f:
                start = int(f.read())
            with open(os.path.join(base, "size")) as f:
                size = int(f.read())
        except (OSError, ValueError):
            continue
        disk = os.path.basename(os.path.dirname(os.path.realpath(base)))
        out[ev["PARTNAME"]] = {"dev": "/dev/" + ev["DEVNAME"], "disk": "/dev/" + disk, "number": number,
                               "start": start * SECTOR, "size": size * SECTOR}
    return out


def disk_size(disk: str) -> int:
    with open(f"/sys/class/block/{os.path.basename(disk)}/size") as f:
        return int(f.read()) * SECTOR


def _run(*cmd, stdin: str | None = None) -> subprocess.CompletedProcess:
    """A tool's result; one that is not installed is a failed result (127), never an exception
    that would cost the data partition."""
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: not installed")


def table_entry(disk: str, name: str) -> tuple[int, int, int]:
    """(number, start, size) in sectors of the GPT entry called ``name``, from the table on disk."""
    import json
    r = _run("sfdisk", "--json", disk)
    try:
        parts = json.loads(r.stdout)["partitiontable"]["partitions"]
        p = next(p for p in parts if p.get("name") == name)
    except (ValueError, KeyError, StopIteration) as e:
        raise DataPartitionError(f"{disk}: no partition {name!r} in the table: {r.stderr.strip()}") from e
    node = p["node"]
    return int(node[len(node.rstrip("0123456789")):]), int(p["start"]), int(p["size"])


def create(say) -> dict:
    """Append a data partition in the free space after the last partition of the root disk."""
    parts = partitions()
    root = next((parts[n] for n in ROOT_LABELS if n in parts), None)
    if root is None:
        raise DataPartitionError("no root partition (root-a/root-b) found: cannot tell which disk is ours")
    disk = root["disk"]
    _run("sfdisk", "--relocate", "gpt-bak-std", disk)
    r = _run("sfdisk", "--append", "--no-reread", "--no-tell-kernel", disk,
             stdin=f'type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="{LABEL}"\n')
    if r.returncode != 0:
        raise DataPartitionError(f"sfdisk could not add the data partition on {disk}: {r.stderr.strip()}")
    number, start, size = table_entry(disk, LABEL)
    # tell the kernel (BLKPG; the disk cannot be re-read while root is mounted from it). A
    # partition added this way has no GPT name in sysfs until the next boot: find it by number.
    r = _run("partx", "--add", "--nr", str(number), disk)
    name = os.path.basename(disk)
    name = f"{name}p{number}" if name[-1].isdigit() else f"{name}{number}"
    for _ in range(40):
        if os.path.exists(f"/sys/class/block/{name}") and os.path.exists(f"/dev/{name}"):
            break
        time.sleep(0.05)
    else:
        raise DataPartitionError(f"made data partition {number} on {disk}, but the kernel does not show it "
                                 f"(partx: exit {r.returncode} {r.stderr.strip()}); it is used from the next boot")
    part = {"dev": f"/dev/{name}", "disk": disk, "number": number, "start": start * SECTOR, "size": size * SECTOR}
    say(f"data: created partition {part['dev']} ({part['size'] >> 20} MiB)")
    return part


def grow(part: dict, say) -> bool:
    """Extend the data partition (the last one) to the end of the disk, and its filesystem to
    the partition (also when an earlier boot grew the partition but not the filesystem)."""
    free = disk_size(part["disk"]) - (part["start"] + part["size"]) - 34 * SECTOR     # GPT backup
    if free >= MIN_GROW:
        _run("sfdisk", "--relocate", "gpt-bak-std", part["disk"])
        r = _run("sfdisk", "--no-reread", "--no-tell-kernel", "-N", str(part["number"]), part["disk"], stdin=", +\n")
        if r.returncode != 0:
            say(f"data: could not grow the partition: {r.stderr.strip()}")
            return False
        # the kernel told the partition's new size (BLKPG, as resizepart does; Debian 13 has no
        # resizepart): the disk cannot be re-read while root is mounted from it
        r = _run("partx", "--update", "--nr", str(part["number"]), part["disk"])
        if r.returncode != 0:
            say(f"data: grew the partition, but the kernel was not told its size: {r.stderr.strip()}; "
                "the filesystem grows at the next boot")
            return False
        say(f"data: partition grown by {free >> 20} MiB to fill the disk")
    return grow_fs(part["dev"], say) or free >= MIN_GROW


def grow_fs(dev: str, say) -> bool:
    """resize2fs when the filesystem is smaller than its partition (by at least MIN_GROW)."""
    size = fs_bytes(dev)
    if size is None or partition_bytes(dev) - size < MIN_GROW:
        return False
    r = _run("resize2fs", dev)
    if r.returncode != 0:
        say(f"data: the filesystem was not grown to its partition: {r.stderr.strip()}")
        return False
    say(f"data: filesystem grown from {size >> 20} to {(fs_bytes(dev) or 0) >> 20} MiB")
    return True


def fs_bytes(dev: str) -> int | None:
    """The size of the ext4 filesystem on ``dev`` (its superblock's block count), None if none."""
    try:
        with open(dev, "rb") as f:
            f.seek(1024)
            sb = f.read(1024)
    except OSError:
        return None
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 0x38)[0] != EXT4_MAGIC:
        return None
    lo, hi = struct.unpack_from("<I", sb, 0x04)[0], struct.unpack_from("<I", sb, 0x150)[0]
    incompat_64bit = struct.unpack_from("<I", sb, 0x60)[0] & 0x80
    return (lo + (hi << 32 if incompat_64bit else 0)) << (10 + struct.unpack_from("<I", sb, 0x18)[0])


def partition_bytes(dev: str) -> int:
    """What the kernel holds ``dev`` to be now (after a BLKPG resize: sysfs's size is current)."""
    try:
        with open(dev, "rb") as f:
            return f.seek(0, os.SEEK_END)
    except OSError:
        return 0


def needs_check(dev: str) -> str | None:
    """Why e2fsck must run before the mount, or None when the superblock says the filesystem was
    cleanly unmounted (the image remounts it read-only before every reboot and power-off): no
    errors recorded, no journal to recover, no mount-count or interval check due."""
    try:
        with open(dev, "rb") as f:
            f.seek(1024)
            sb = f.read(1024)
    except OSError as e:
        return f"its superblock cannot be read ({e.strerror})"
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 0x38)[0] != EXT4_MAGIC:
        return "no ext4 superblock"
    count, most = struct.unpack_from("<hh", sb, 0x34)
    state = struct.unpack_from("<H", sb, 0x3A)[0]
    last, interval = struct.unpack_from("<II", sb, 0x40)
    if state & EXT4_ERROR_FS or not state & EXT4_VALID_FS:
        return "errors were recorded on it"
    if struct.unpack_from("<I", sb, 0x60)[0] & INCOMPAT_RECOVER:
        return "not cleanly unmounted: its journal needs recovery"
    if most > 0 and count >= most:
        return f"mounted {count} times since its last check"
    if interval and time.time() - last >= interval:
        return "its check interval has passed"
    return None


def check(dev: str) -> tuple[bool, str]:
    """e2fsck, repairing what it can (preen, then yes), unless the superblock says the
    filesystem is clean. (usable, what happened)."""
    why = needs_check(dev)
    if why is None:
        return True, "clean"
    r = _run("e2fsck", "-p", dev)
    if r.returncode < 4:
        return True, "clean" if r.returncode == 0 else "repaired"
    r = _run("e2fsck", "-fy", dev)
    if r.returncode < 4:
        return True, "repaired (e2fsck -y)"
    lines = (r.stdout + r.stderr).strip().splitlines()
    return False, lines[-1] if lines else "unreadable"


def blank(dev: str) -> bool:
    """No filesystem yet: the image ships the partition zero-filled (made at first boot)."""
    with open(dev, "rb") as f:
        head = f.read(1 << 20)
    return head.count(0) == len(head)


def make_fs(dev: str) -> None:
    r = _run("mkfs.ext4", "-q", "-F", "-L", LABEL, "-O", "^metadata_csum_seed", "-E", "lazy_itable_init=1", dev)
    if r.returncode != 0:
        raise DataPartitionError(f"mkfs.ext4 {dev} failed: {r.stderr.strip()}")


def prepare(mountpoint: str, say) -> dict:
    """Find, check, (re)create, mount and grow the data partition. Returns what happened:
    {"dev", "created": bool (a partition or filesystem was made), "recreated": reason or None, "grown": bool}."""
    part = partitions().get(LABEL)
    created = part is None
    recreated = None
    if created:
        say("data: no data partition: creating one (first boot, or it was lost)")
        part = create(say)
        make_fs(part["dev"])
    elif blank(part["dev"]):
        say(f"data: first boot: making the data filesystem on {part['dev']}")
        make_fs(part["dev"])
        created = True
    else:
        why = needs_check(part["dev"])
        if why:
            say(f"data: checking {part['dev']}: {why}")
        ok, how = check(part["dev"])
        if not ok:
            recreated = how
            say(f"data: {part['dev']} is unreadable ({how}): recreating it; stored models and config are lost, "
                f"defaults are restored")
            make_fs(part["dev"])
        elif how != "clean":
            say(f"data: {part['dev']} was not cleanly unmounted: {how}")
    try:
        mount(part["dev"], mountpoint, "ext4", MS_NOATIME)
    except OSError as e:
        if recreated or created:
            raise DataPartitionError(str(e)) from e
        recreated = str(e)
        say(f"data: {e}: recreating the filesystem; defaults are restored")
        make_fs(part["dev"])
        mount(part["dev"], mountpoint, "ext4", MS_NOATIME)
    grown = grow(part, say)
    return {"dev": part["dev"], "created": created, "recreated": recreated, "grown": grown}
