"""Read and write the boot partition's GRUB environment (/nnos/grubenv on the FAT boot partition)
of an nnos disk image offline, with mtools: the slot order and attempts RAUC's grub backend keeps
there, and NNOS_EXTRA, extra kernel arguments for this device (GRUB appends them).

    python3 image/bootenv.py DISK                       # list
    python3 image/bootenv.py DISK NNOS_EXTRA="nnos.loop_watchdog_s=2.5"
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datafs import partition  # noqa: E402

SIZE = 1024
HEADER = "# GRUB Environment Block\n"


def _image(disk: str) -> str:
    return f"{disk}@@{partition(disk, 'boot')['start']}"


def parse(block: bytes) -> dict[str, str]:
    text = block.decode(errors="replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def render(env: dict[str, str]) -> bytes:
    body = HEADER + "".join(f"{k}={v}\n" for k, v in env.items())
    if len(body) > SIZE:
        raise ValueError(f"the GRUB environment would take {len(body)} bytes; it holds {SIZE}")
    return (body + "#" * (SIZE - len(body))).encode()


def read(disk: str) -> dict[str, str]:
    r = subprocess.run(["mtype", "-i", _image(disk), "::/nnos/grubenv"], capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"{disk}: no /nnos/grubenv on the boot partition: {r.stderr.decode().strip()}")
    return parse(r.stdout)


def write(disk: str, **changes: str) -> dict[str, str]:
    env = dict(read(disk), **changes)
    with tempfile.NamedTemporaryFile(suffix=".grubenv", delete=False) as f:
        f.write(render(env))
    try:
        subprocess.run(["mcopy", "-o", "-i", _image(disk), f.name, "::/nnos/grubenv"], check=True, capture_output=True)
    finally:
        os.unlink(f.name)
    return env


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    env = write(argv[0], **dict(a.split("=", 1) for a in argv[1:])) if argv[1:] else read(argv[0])
    for k, v in env.items():
        print(f"{k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
