"""The hotplug watcher process: udev events for the board's USB devices, passed to the loop."""
from __future__ import annotations

import argparse
import os
import sys

from nnos_hardware.board import load_board
from nnos_hardware.hotplug import HotplugWatcher

from ..runtime.control import ControlError, request


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnos.supervisor.hotplug")
    ap.add_argument("--board", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args(argv)
    board = load_board(a.board)
    sock = os.path.join(a.data, "run", "loop.sock")
    watcher = HotplugWatcher(board)
    pending = watcher.scan()
    while True:
        for e in pending:
            print(f"hotplug: {e.device} {e.action}: {e.identity}", file=sys.stderr, flush=True)
            msg = {"cmd": "device", "device": e.device, "action": e.action, "path": e.identity.devnode}
            try:
                request(sock, msg, timeout=5)
            except ControlError as err:
                print(f"hotplug: {e.device} {e.action} at {e.identity.devnode}: loop not told ({err})", file=sys.stderr)
        pending = watcher.poll(1.0)


if __name__ == "__main__":
    sys.exit(main())
