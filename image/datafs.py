"""Read and write the data partition of an nnos disk image offline (the device switched off):
the API token, the store, config files — without mounting and without loop devices
(e2fsprogs' debugfs works on the partition's bytes).

    python3 image/datafs.py DISK cat /nnos/token
    python3 image/datafs.py DISK put /config/network.toml ./network.toml

Used by the boot tests (to read the token the device made, and to damage the partition on
purpose). A fresh card has no data partition until its first boot: config for that boot goes on
the boot partition (image/bootconfig.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

LABEL = "nnos-data"


class DataFsError(Exception):
    pass


def partition(disk: str, name: str = LABEL) -> dict:
    """{"start": bytes, "size": bytes, "node": number} of the named GPT partition."""
    r = subprocess.run(["sfdisk", "--json", disk], capture_output=True, text=True)
    if r.returncode != 0:
        raise DataFsError(f"{disk}: no partition table: {r.stderr.strip()}")
    table = json.loads(r.stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    for i, p in enumerate(table["partitions"]):
        if p.get("name") == name:
            return {"start": p["start"] * sector, "size": p["size"] * sector, "number": i + 1}
    raise DataFsError(f"{disk}: no partition named {name!r}")


class DataFs:
    """A working copy of the data partition; ``commit()`` writes it back into the disk."""

    def __init__(self, disk: str):
        self.disk = disk
        self.part = partition(disk)
        fd, self.path = tempfile.mkstemp(prefix="nnos-data-", suffix=".ext4")
        os.close(fd)
        with open(disk, "rb") as src, open(self.path, "wb") as dst:
            src.seek(self.part["start"])
            left = self.part["size"]
            while left:
                chunk = src.read(min(left, 4 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                left -= len(chunk)

    def fsck(self) -> int:
        """e2fsck -fy on the copy (replays the journal a power cut left). Its exit status:
        0 clean, 1 repaired, 4+ errors left."""
        return subprocess.run(["e2fsck", "-fy", self.path], capture_output=True).returncode

    def _debugfs(self, request: str, write: bool = False) -> str:
        r = subprocess.run(["debugfs", *(["-w"] if write else []), "-R", request, self.path],
                           capture_output=True, text=True)
        err = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("debugfs "))
        if r.returncode != 0 or "File not found" in err or "not found by ext2_lookup" in err:
            raise DataFsError(f"debugfs {request!r}: {err.strip() or r.returncode}")
        return r.stdout

    def read(self, path: str) -> bytes:
        r = subprocess.run(["debugfs", "-R", f"cat {path}", self.path], capture_output=True)
        if b"not found" in r.stderr:
            raise DataFsError(f"{path}: not on the data partition")
        return r.stdout

    def listdir(self, path: str) -> list[str]:
        out = self._debugfs(f"ls -p {path}")
        return [f.split("/")[5] for f in out.splitlines() if f.count("/") >= 6 and f.split("/")[5] not in (".", "..")]

    def write(self, path: str, data: bytes) -> None:
        """Replace (or create) the file at ``path``; its directory must exist."""
        directory, name = os.path.split(path)
        with tempfile.NamedTemporaryFile() as f, tempfile.NamedTemporaryFile("w") as script:
            f.write(data)
            f.flush()
            script.write(f"cd {directory or '/'}\nrm {name}\nwrite {f.name} {name}\n")
            script.flush()
            subprocess.run(["debugfs", "-w", "-f", script.name, self.path], capture_output=True)
        if self.read(path) != data:
            raise DataFsError(f"{path}: the write did not take")

    def commit(self) -> None:
        with open(self.path, "rb") as src, open(self.disk, "r+b") as dst:
            dst.seek(self.part["start"])
            while chunk := src.read(4 << 20):
                dst.write(chunk)
            os.fsync(dst.fileno())

    def close(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None) -> int:
    disk, cmd, *args = (argv or sys.argv[1:])
    with DataFs(disk) as fs:
        fs.fsck()
        if cmd == "cat":
            sys.stdout.buffer.write(fs.read(args[0]))
        elif cmd == "ls":
            print("\n".join(fs.listdir(args[0] if args else "/")))
        elif cmd == "put":
            with open(args[1], "rb") as f:
                fs.write(args[0], f.read())
            fs.commit()
        else:
            raise SystemExit(f"unknown command {cmd!r}: cat PATH | ls [DIR] | put PATH FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
