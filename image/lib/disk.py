"""The disk image: a GPT with the boot partition (FAT, EFI), root slots A and B, and the data
partition — assembled into a plain file without loop devices (sfdisk writes the table, the
filesystems are copied in at their offsets).

    python3 disk.py ESP_IMG ROOT_IMG OUT_IMG ARCH
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

MiB = 1 << 20
ESP_SIZE = 40 * MiB          # two slots' kernel + initramfs (~11 MiB each), the EFI loader
DATA_SIZE = 32 * MiB          # made and then grown to the disk's end on first boot (the image: 370 MiB,
                              # 388 MB, with cameras and recordings in it)
SLOT_HEADROOM = 1.25          # a slot holds an update somewhat larger than today's root
SLOT_ROUND = 4 * MiB          # slot sizes in whole SD/eMMC erase blocks (4 MiB); the headroom, not a
                              # coarser rounding, is what leaves room for an update
ROOT_TYPES = {"amd64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "arm64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"}
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def layout(root_bytes: int, arch: str) -> list[dict]:
    slot = round_up(int(root_bytes * SLOT_HEADROOM), SLOT_ROUND)
    # a board whose boot ROM reads its loader from fixed sectors (Rockchip: 32 KiB and 8 MiB)
    # moves the first partition out of the way with FIRST_PARTITION_MIB
    parts, start = [], int(os.environ.get("FIRST_PARTITION_MIB", "1")) * MiB
    for name, size, ptype, content in (("boot", ESP_SIZE, ESP_TYPE, "FAT32: EFI loader, kernel, initramfs"),
                                       ("root-a", slot, ROOT_TYPES[arch], "squashfs root filesystem (read-only)"),
                                       ("root-b", slot, ROOT_TYPES[arch], "empty: the slot for an update"),
                                       ("nnos-data", DATA_SIZE, DATA_TYPE, "empty: made and grown on first boot")):
        parts.append({"name": name, "start": start, "size": size, "type": ptype, "content": content})
        start += size
    return parts


def copy_into(dst, src_path: str, offset: int) -> None:
    with open(src_path, "rb") as src:
        dst.seek(offset)
        while chunk := src.read(4 * MiB):
            dst.write(chunk)


def assemble(esp: str, root: str, out: str, arch: str) -> list[dict]:
    parts = layout(os.path.getsize(root), arch)
    total = parts[-1]["start"] + parts[-1]["size"] + MiB
    tmp = out + ".part"
    with open(tmp, "wb") as f:
        f.truncate(total)
    script = "label: gpt\nunit: sectors\nfirst-lba: 34\n" + "".join(
        f'start={p["start"] // 512}, size={p["size"] // 512}, type={p["type"]}, name="{p["name"]}"\n' for p in parts)
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", tmp], input=script, text=True, check=True)
    with open(tmp, "r+b") as f:
        copy_into(f, esp, parts[0]["start"])
        copy_into(f, root, parts[1]["start"])
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return parts


if __name__ == "__main__":
    esp, root, out, arch = sys.argv[1:]
    print(json.dumps(assemble(esp, root, out, arch)))
