"""Run under `umockdev-run`: USB-serial devices from udev records (tests/hardware/data) come and
go in a umockdev testbed; nnos's watcher (pyudev) must bind the configured one by identity,
whatever its /dev node, mark it stale on removal and bind it again when it returns.
Prints one JSON object with what happened."""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.append("/usr/lib/python3/dist-packages")          # Debian's python3-gi and its typelibs

import gi  # noqa: E402

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

from nnos_hardware.board import load_board  # noqa: E402
from nnos_hardware.devices import NnosSerialDevice  # noqa: E402
from nnos_hardware.hotplug import HotplugManager, HotplugWatcher, present  # noqa: E402
from tests.support.firmware import FirmwareThread, samples_after  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BOARD = os.path.join(HERE, "..", "..", "hardware", "boards", "cartpole-sim.toml")


def record(name, devnode):
    return open(os.path.join(HERE, "data", name)).read().replace("@DEVNAME@", devnode)


def syspaths(text):
    """Every device of a record, child (the tty) first."""
    return ["/sys" + line[3:].strip() for line in text.splitlines() if line.startswith("P: ")]


def tty_syspath(text):
    return syspaths(text)[0]


def main():
    out = {}
    board_text = open(BOARD).read().replace('simulator = ["python", "-m", "nnos_hardware.sim", "cartpole"]',
                                            'usb = { vendor = 0x0403, product = 0x6001, serial = "A10K1234" }')
    path = "/tmp/nnos-hotplug-board.toml"
    open(path, "w").write(board_text)
    board = load_board(path)
    tb = UMockdev.Testbed.new()
    first, second = FirmwareThread(device_id="ft232r-A10K1234"), FirmwareThread(device_id="ft232r-A10K1234")
    # an unrelated board is plugged in before nnos starts: present at scan, never bound
    arduino = record("arduino-uno.umockdev", "/dev/ttyACM0")
    tb.add_from_string(arduino)
    watcher = HotplugWatcher(board)
    log = []
    manager = HotplugManager(board, lambda cfg: NnosSerialDevice(cfg.name, "", expected=cfg.channels,
                                                                 handshake_timeout=2.0), log=log.append)
    out["scan"] = [e.device for e in watcher.scan()]
    tb.uevent(tty_syspath(arduino), "add")      # someone plugs an unrelated board in: ignored
    for e in watcher.poll(0.5):
        manager.handle(e)
    dev = manager.devices["cartpole"]
    sample = dev.latest("cart") if dev.samples else None

    # plug the FTDI adapter in: it appears as first.port (think /dev/ttyUSB0)
    ftdi = record("ftdi-ft232r.umockdev", first.port)
    tb.add_from_string(ftdi)
    tty = tty_syspath(ftdi)
    tb.uevent(tty, "add")
    events = watcher.poll(2.0)
    out["add_events"] = [(e.action, e.device, e.identity.vendor, e.identity.product, e.identity.serial,
                          e.identity.devnode == first.port) for e in events]
    for e in events:
        manager.handle(e)
    out["bound_after_add"] = dev.is_open and dev.device_id
    out["samples_after_add"] = samples_after(dev, 5) if dev.is_open else 0
    sample = dev.latest("cart")

    # unplug it
    tb.uevent(tty, "remove")
    for sp in syspaths(ftdi):                 # the whole USB device goes away, as on a real unplug
        tb.remove_device(sp)
    for e in watcher.poll(2.0):
        manager.handle(e)
    out["open_after_remove"] = dev.is_open
    out["stale_after_remove"] = dev.latest("cart").t_host == 0.0

    # plug it back in: renumbered to another node (second.port), same identity
    ftdi2 = record("ftdi-ft232r.umockdev", second.port).replace("ttyUSB0", "ttyUSB1")
    tb.add_from_string(ftdi2)
    tb.uevent(tty_syspath(ftdi2), "add")
    for e in watcher.poll(2.0):
        manager.handle(e)
    out["rebound"] = dev.is_open and manager.where.get("cartpole") == second.port
    out["samples_after_readd"] = samples_after(dev, 5) if dev.is_open else 0
    out["same_sample_object"] = dev.latest("cart") is sample
    out["scan_when_present"] = [(e.device, e.identity.devnode == second.port) for e in HotplugWatcher(board).scan()]
    out["present"] = present(board) == {"cartpole": second.port}
    out["unmatched"] = sorted({f"{i.vendor:04x}:{i.product:04x}" for i in watcher.unmatched if i.vendor is not None})
    out["binds"], out["removals"], out["failures"] = manager.binds, manager.removals, manager.failures
    out["log"] = log
    dev.close()
    first.stop()
    second.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
