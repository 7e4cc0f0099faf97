"""Write the image to a card or disk: `./build.sh flash /dev/sdX [--image FILE] [--config DIR] [--force]`.

Refuses, before writing a byte: something that is not a block device; a disk with any mounted
partition (or in use: opened O_EXCL); the disk holding this machine's root filesystem; a disk
larger than --max-gb (an external drive, not a card) unless --force; a --config file the device
would refuse. Then writes, syncs, drops the cached pages and reads everything back to compare,
and puts --config's files (board.toml, network.toml, nnos.env, hostname, token, scrape_token) on
the card's boot partition, imported at its first boot (image/bootconfig.py).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))      # bootconfig.py, beside this

CHUNK = 4 << 20
DEFAULT_MAX_GB = 256


class FlashError(Exception):
    pass


def read_config(folder: str) -> dict[str, bytes]:
    """The files of ``folder`` for the card's boot partition, each checked as the device will."""
    from bootconfig import BootConfigToolError, check_file
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError as e:
        raise FlashError(f"--config {folder}: {e.strerror}") from e
    out = {}
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
        try:
            check_file(name, out[name])
        except BootConfigToolError as e:
            raise FlashError(f"--config {folder}: {e}; nothing was written") from e
    return out


def put_config(dev: str, config: dict[str, bytes], say) -> None:
    from bootconfig import write
    for name, data in config.items():
        write(dev, name, data, checked=False)            # checked before the card was written
        say(f"flash: {name} put on the boot partition: imported at the first boot")


def _sysfs(dev: str) -> str:
    """The block device's own sysfs directory."""
    st = os.stat(dev)
    return os.path.realpath(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")


def _is_partition(sysfs_path: str) -> bool:
    return os.path.exists(os.path.join(sysfs_path, "partition"))


def _sysfs_disk(dev: str) -> str:
    """The sysfs directory of the whole disk containing ``dev``."""
    path = _sysfs(dev)
    return os.path.dirname(path) if _is_partition(path) else path


def _holds(disk_sysfs: str, major_minor: str) -> bool:
    """Is the block device major:minor this disk or one of its partitions?"""
    for d in [disk_sysfs] + [os.path.join(disk_sysfs, p) for p in os.listdir(disk_sysfs)]:
        try:
            with open(os.path.join(d, "dev")) as f:
                if f.read().strip() == major_minor:
                    return True
        except OSError:
            continue
    return False


def mounted_parts(dev: str) -> list[str]:
    disk = _sysfs_disk(dev)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _holds(disk, fields[2]):
                out.append(f"{fields[9] if len(fields) > 9 else '?'} on {fields[4]}")
    return out


def root_disk_sysfs() -> str | None:
    st = os.stat("/")
    mm = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    path = os.path.realpath(f"/sys/dev/block/{mm}")
    if not os.path.exists(path):
        return None                           # overlay/tmpfs root: no block device holds it
    return os.path.dirname(path) if _is_partition(path) else path


def device_size(dev: str) -> int:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def check_target(dev: str, image_size: int, max_bytes: int, force: bool) -> int:
    try:
        st = os.stat(dev)
    except OSError as e:
        raise FlashError(f"{dev}: {e.strerror}") from e
    if not stat.S_ISBLK(st.st_mode):
        raise FlashError(f"{dev} is not a block device (expected a whole disk such as /dev/sdb or /dev/mmcblk0)")
    if _is_partition(_sysfs(dev)):
        raise FlashError(f"{dev} is a partition; give the whole disk ({os.path.basename(_sysfs_disk(dev))})")
    root = root_disk_sysfs()
    if root and os.path.realpath(root) == os.path.realpath(_sysfs_disk(dev)):
        raise FlashError(f"{dev} holds this machine's root filesystem: refusing")
    mounted = mounted_parts(dev)
    if mounted:
        raise FlashError(f"{dev} is mounted ({'; '.join(mounted)}): unmount it first")
    size = device_size(dev)
    if size < image_size:
        raise FlashError(f"{dev} is {size / 2**30:.2f} GiB, smaller than the image ({image_size / 2**30:.2f} GiB)")
    if size > max_bytes and not force:
        raise FlashError(f"{dev} is {size / 2**30:.1f} GiB, more than --max-gb {max_bytes / 2**30:.0f}: "
                         f"is it really the card? Use --force if so")
    return size


def flash(image: str, dev: str, max_bytes: int = DEFAULT_MAX_GB << 30, force: bool = False, say=print,
          config: dict[str, bytes] | None = None) -> str:
    """Write ``image`` to ``dev`` and verify it, then put ``config`` (read_config) on its boot
    partition; returns the sha256 of what was written."""
    image_size = os.path.getsize(image)
    check_target(dev, image_size, max_bytes, force)
    try:
        out = os.open(dev, os.O_WRONLY | os.O_EXCL)   # O_EXCL: fails when the kernel has it in use
    except OSError as e:
        raise FlashError(f"{dev}: cannot open it exclusively ({e.strerror}): is it in use?") from e
    h = hashlib.sha256()
    t0 = time.monotonic()
    try:
        with open(image, "rb") as src:
            done = 0
            while chunk := src.read(CHUNK):
                os.write(out, chunk)
                h.update(chunk)
                done += len(chunk)
        os.fsync(out)
        os.posix_fadvise(out, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(out)
    say(f"flash: wrote {done / 2**20:.0f} MiB to {dev} in {time.monotonic() - t0:.1f} s; verifying")
    back = hashlib.sha256()
    fd = os.open(dev, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # read the device, not the page cache
        left = image_size
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                break
            back.update(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if back.hexdigest() != h.hexdigest():
        raise FlashError(f"{dev}: read back differs from the image: the card may be failing or fake")
    say(f"flash: verified ({h.hexdigest()[:16]}); {dev} is ready to boot")
    if config:
        put_config(dev, config, say)
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="build.sh flash", description=__doc__.split("\n\n")[0])
    ap.add_argument("device")
    ap.add_argument("--image", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "out", "nnos-amd64.img"))
    ap.add_argument("--max-gb", type=float, default=DEFAULT_MAX_GB)
    ap.add_argument("--force", action="store_true", help="write to a device larger than --max-gb")
    ap.add_argument("--config", metavar="DIR",
                    help="board.toml, network.toml, nnos.env, hostname, token, scrape_token for the first boot")
    a = ap.parse_args(argv)
    try:
        config = read_config(a.config) if a.config else None
        flash(a.image, a.device, int(a.max_gb * (1 << 30)), a.force, config=config)
    except FlashError as e:
        print(f"flash: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
