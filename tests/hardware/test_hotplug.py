"""Hotplug by identity against udev device records (an FTDI FT232R and an Arduino Uno) in a
umockdev testbed: pyudev sees them exactly as it would see real ones."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from nnos_hardware.hotplug import Identity, matches
from nnos_hardware.board import DeviceConfig
from tests.support.paths import ROOT

pytestmark = pytest.mark.skipif(shutil.which("umockdev-run") is None,
                                reason="umockdev is not installed (./build.sh installs it)")


def test_identity_matching_rules():
    cfg = DeviceConfig("arm", "nnos-serial", [], {}, usb={"vendor": 0x0403, "product": 0x6001, "serial": "A1"})
    ident = Identity(0x0403, 0x6001, "A1", "/dev/ttyUSB3", "/sys/x")
    assert matches(cfg, ident)
    assert not matches(cfg, Identity(0x0403, 0x6001, "B2", "/dev/ttyUSB3", "/sys/x"))       # another unit
    assert not matches(cfg, Identity(0x2341, 0x0043, "A1", "/dev/ttyUSB3", "/sys/x"))       # another product
    any_unit = DeviceConfig("arm", "nnos-serial", [], {}, usb={"vendor": 0x0403, "product": 0x6001})
    assert matches(any_unit, Identity(0x0403, 0x6001, None, "/dev/ttyUSB9", "/sys/y"))


def test_bind_remove_and_rebind_by_identity():
    r = subprocess.run(["umockdev-run", "--", os.path.join(ROOT, ".venv", "bin", "python")
                        if os.path.exists(os.path.join(ROOT, ".venv", "bin", "python")) else "python3",
                        os.path.join(ROOT, "tests", "hardware", "hotplug_scenario.py")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["scan"] == []                                           # nothing of ours at start
    assert out["add_events"][0][:5] == ["add", "cartpole", 0x0403, 0x6001, "A10K1234"]
    assert out["add_events"][0][5]
    assert out["bound_after_add"] == "ft232r-A10K1234"
    assert out["samples_after_add"] >= 5
    assert out["open_after_remove"] is False
    assert out["stale_after_remove"] is True
    assert out["rebound"] is True
    assert out["samples_after_readd"] >= 5   # on its new node
    assert out["same_sample_object"] is True                            # the loop's bindings stay valid
    assert out["unmatched"] == ["2341:0043"]                            # the Arduino is not ours
    assert out["scan_when_present"] == [["cartpole", True]]
    assert out["present"], "a process started after the plug-in finds it (a restarted loop)"
    assert (out["binds"], out["removals"], out["failures"]) == (2, 1, 0)


def test_remove_event_without_identity_maps_to_what_was_bound():
    # regression (found booting the image): on a real kernel the tty's remove event has no USB
    # parent and often no ID_* properties left, so the removal was dropped and the device was
    # only noticed as stale
    from nnos_hardware.board import load_board
    from nnos_hardware.hotplug import HotplugWatcher

    class Dev:
        def __init__(self, action, usb):
            self.action, self.sys_path, self.device_node = action, "/sys/devices/usb1/1-1/ttyUSB0", "/dev/ttyUSB0"
            self.properties = {"ID_VENDOR_ID": "0403", "ID_MODEL_ID": "6001", "ID_SERIAL_SHORT": "NNOSCP01"} if usb else {}

        def find_parent(self, *a):
            return None

    class Monitor:
        def __init__(self, queue):
            self.queue = queue

        def poll(self, timeout=None):
            return self.queue.pop(0) if self.queue else None

    w = HotplugWatcher.__new__(HotplugWatcher)
    w.board = load_board(os.path.join(ROOT, "hardware", "boards", "cartpole-usb.toml"))
    w.unmatched, w.bound = [], {}
    w.monitor = Monitor([Dev("add", True), Dev("remove", False)])
    events = w.poll(0.1) + w.poll(0.1)
    assert [(e.action, e.device) for e in events] == [("add", "cartpole"), ("remove", "cartpole")]
    assert w.bound == {}
