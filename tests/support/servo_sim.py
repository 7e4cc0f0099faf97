"""A simulated servo bus (python -m nnos_hardware.sim feetech-arm) as a real process on a pty,
for the drivers' tests and the vendor SDKs' independent check."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from contextlib import contextmanager

from tests.support.paths import ROOT


@contextmanager
def servo_bus(robot: str, *args: str):
    """Yields the bus's pty path. ``robot``: feetech-arm or dynamixel-arm; ``args``: --servos N,
    --silent ID, --error ID:BITS, …"""
    with servo_bus_process(robot, *args) as (port, _):
        yield port


@contextmanager
def servo_bus_process(robot: str, *args: str):
    """Yields (the bus's pty path, its process) — to stop, freeze or kill it in a test."""
    p = subprocess.Popen([sys.executable, "-m", "nnos_hardware.sim", robot, *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulated bus did not start: {p.stderr.read()[-2000:]}")
        yield json.loads(line)["port"], p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def feetech_bus(*args: str):
    return servo_bus("feetech-arm", *args)


def dynamixel_bus(*args: str):
    return servo_bus("dynamixel-arm", *args)
