"""The driver table (nnos_hardware/devices/factory.py): a board pays for its own drivers only,
and names them, so the supervisor's fork server imports them before forking the loop."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from tests.support.paths import ROOT

CHILD = r"""
import json, sys
from nnos_hardware.board import load_board
from nnos_hardware.devices.factory import make_devices, modules_for
board = load_board(sys.argv[1])
drivers = sorted(m for m in sys.modules if m.startswith("nnos_hardware.devices.") or m == "nnos_hardware.recording")
for m in sorted(modules_for(board)):
    __import__(m)
before = set(sys.modules)
devices = make_devices(board)
print(json.dumps({"with_board": drivers, "named": sorted(modules_for(board)),
                  "more": sorted(m for m in set(sys.modules) - before if m.startswith("nnos_hardware"))}))
"""


def test_each_board_imports_only_its_drivers_and_names_all_it_needs():
    boards = sorted(glob.glob(os.path.join(ROOT, "hardware", "boards", "*.toml")))
    assert len(boards) >= 3
    seen = set()
    for path in boards:
        r = subprocess.run([sys.executable, "-c", CHILD, path], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        heavy = {"nnos_hardware.devices.servo_bus", "nnos_hardware.devices.camera", "nnos_hardware.recording"}
        assert not heavy & set(got["with_board"]), (path, got["with_board"])   # loading a board imports no driver
        assert got["more"] == [], (path, got)            # the named modules were all its devices needed
        seen |= set(got["named"])
    assert {"nnos_hardware.devices.nnos_serial", "nnos_hardware.devices.servo_bus",
            "nnos_hardware.devices.camera"} <= seen, seen
    assert "serial" in seen, seen                         # pyserial: imported at a port's open, named ahead


def test_a_serial_device_opens_without_importing_anything_not_named():
    """The loop opens its devices after the fork server imported the named modules: opening a
    serial port (a pty here) imports nothing more (pyserial was imported at the open, on the way
    to the first tick)."""
    code = ("import json, os, sys\n"
            "from nnos_hardware.devices.factory import MODULES\n"
            "from nnos_hardware.transport import SerialTransport\n"
            "for m in MODULES['nnos-serial']: __import__(m)\n"
            "master, slave = os.openpty()\n"
            "before = set(sys.modules)\n"
            "t = SerialTransport(os.ttyname(slave), 115200)\n"
            "print(json.dumps(sorted(set(sys.modules) - before)))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [], r.stdout
