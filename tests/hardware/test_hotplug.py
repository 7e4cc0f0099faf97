"""Hotplug by identity against udev device records (an FTDI FT232R and an Arduino Uno) in a
umockdev testbed: pyudev sees them exactly as it would see real ones."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from hardware.hotplug import Identity, matches
from hardware.board import DeviceConfig
from tests.conftest import ROOT

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
    assert out["add_events"][0][:5] == ["add", "cartpole", 0x0403, 0x6001, "A10K1234"] and out["add_events"][0][5]
    assert out["bound_after_add"] == "ft232r-A10K1234" and out["samples_after_add"] >= 5
    assert out["open_after_remove"] is False and out["stale_after_remove"] is True
    assert out["rebound"] is True and out["samples_after_readd"] >= 5   # on its new node
    assert out["same_sample_object"] is True                            # the loop's bindings stay valid
    assert out["unmatched"] == ["2341:0043"]                            # the Arduino is not ours
    assert out["scan_when_present"] == [["cartpole", True]]
    assert (out["binds"], out["removals"], out["failures"]) == (2, 1, 0)
