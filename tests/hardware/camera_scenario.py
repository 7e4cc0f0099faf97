"""Run under `umockdev-run`: USB webcams (a udev record of a Logitech C270 — a capture node and
a metadata node — in tests/hardware/data) plugged in a umockdev testbed at whatever /dev/video
numbers; nnos's V4L2 transport must find the configured one's capture node by USB identity
(and serial, when there are two of the same model). Prints one JSON object with what it found."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.append("/usr/lib/python3/dist-packages")          # Debian's python3-gi and its typelibs

import gi  # noqa: E402

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

from nnos_hardware.errors import TransportError  # noqa: E402
from nnos_hardware.v4l2 import find  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
C270 = {"vendor": 0x046D, "product": 0x0825}


def record(port: str, nodes: tuple[str, str], serial: str, have: set) -> str:
    """The camera's udev record, without the devices (the USB bus, the controller) already there."""
    text = open(os.path.join(HERE, "data", "uvc-c270.umockdev")).read()
    text = text.replace("@PORT@", port).replace("@NODE0@", nodes[0]).replace("@NODE1@", nodes[1]).replace("@SERIAL@", serial)
    blocks = [b for b in text.strip().split("\n\n") if b.splitlines()[0] not in have]
    have.update(b.splitlines()[0] for b in blocks)
    return "\n\n".join(blocks) + "\n"


def attempt(usb):
    try:
        return find("cam", usb)
    except TransportError as e:
        return f"error: {e}"


def main():
    tb, have = UMockdev.Testbed.new(), set()
    out = {"none": attempt(C270)}
    tb.add_from_string(record("1-3", ("video2", "video3"), "B1A2C3D4", have))      # plugged in after something else
    out["one"] = attempt(C270)
    tb.add_from_string(record("1-4", ("video4", "video5"), "E5F6A7B8", have))      # a second C270
    out["by_serial"] = attempt(dict(C270, serial="E5F6A7B8"))
    out["other_serial"] = attempt(dict(C270, serial="00000000"))
    out["other_product"] = attempt({"vendor": 0x046D, "product": 0x085B})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
