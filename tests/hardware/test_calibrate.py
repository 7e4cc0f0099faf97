"""`nnos calibrate BOARD` against the simulated SO-101 bus, whose joints a simulated hand moves
while torque is off: the recorded ranges are the ones the hand swept, stored where the loop
and GET /v1/calibration find them; or the servos' own limits."""
from __future__ import annotations

import subprocess
import sys

from nnos_hardware import calibration as cal
from tests.support.arms import write_board
from tests.support.paths import ROOT
from tests.support.servo_sim import servo_bus
from tests.support.timing import scaled

HAND = 700                        # ticks either side of the centre


def calibrate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnos.cli", "calibrate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=scaled(120))


def test_calibrate_records_the_range_a_hand_moves_each_joint_through(tmp_path):
    with servo_bus("feetech-arm", "--servos", "6", "--hand", str(HAND)) as port:
        board = write_board(tmp_path, "so101", path="/dev/null")
        r = calibrate(board.path, "--device", f"arm={port}", "--seconds", "2.5", "--data", str(tmp_path / "data"),
                      "--invert", "wrist_roll")
    assert r.returncode == 0, r.stderr
    assert "move every joint through its whole range" in r.stdout
    found = cal.load(str(tmp_path / "data"), board, lambda d: 4096)["arm"]
    for joint, c in found.items():
        assert 2048 - HAND <= c.min <= 2048 - HAND * 0.9, (joint, c)     # a 0.5 Hz sweep over 2.5 s reaches both ends
        assert 2048 + HAND * 0.9 <= c.max <= 2048 + HAND, (joint, c)
        assert abs(c.homing - 2048) <= HAND * 0.1
    assert found["wrist_roll"].direction == -1 and found["gripper"].direction == 1


def test_calibrate_refuses_joints_that_did_not_move_and_takes_servo_limits_on_request(tmp_path):
    with servo_bus("feetech-arm", "--servos", "6") as port:
        board = write_board(tmp_path, "so101", path="/dev/null")
        r = calibrate(board.path, "--device", f"arm={port}", "--seconds", "0.5", "--data", str(tmp_path / "data"))
        assert r.returncode == 2
        assert "joints that hardly moved: shoulder_pan (0 ticks)" in r.stderr
        assert "move each joint through its whole range" in r.stderr
        r = calibrate(board.path, "--device", f"arm={port}", "--from-servos", "--data", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    found = cal.load(str(tmp_path / "data"), board, lambda d: 4096)["arm"]
    assert (found["elbow_flex"].min, found["elbow_flex"].max, found["elbow_flex"].homing) == (0, 4095, 2047)


def test_calibrate_says_when_the_bus_is_not_there(tmp_path):
    board = write_board(tmp_path, "so101", path="/dev/null")
    r = calibrate(board.path, "--device", "arm=/dev/ttyNOPE0", "--data", str(tmp_path / "data"))
    assert r.returncode == 2
    assert "cannot open serial port /dev/ttyNOPE0" in r.stderr and "is nnos running?" in r.stderr
