"""Servo buses in a board (so101.toml, koch.toml and their mistakes) and the calibration's
storage: crash-safe, refused when corrupt or recorded for another arm."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nnos_hardware import calibration as cal
from nnos_hardware.board import load_board
from nnos_hardware.errors import ConfigError
from tests.support.arms import board_text, calibration_doc, write_board
from tests.support.paths import BOARDS

RES = lambda d: 4096  # noqa: E731 - every servo here has 4096 ticks a turn


@pytest.mark.parametrize("name", ["so101", "koch"])
def test_the_arm_boards_load_with_joint_names(name):
    b = load_board(os.path.join(BOARDS, f"{name}.toml"))
    arm = b.device("arm")
    assert arm.joint_names == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    assert arm.servo_ids == [1, 2, 3, 4, 5, 6]
    goal = b.channel("arm", "goal")
    assert goal.failsafe == "hold" and goal.max_rate == 2.0
    assert goal.names == tuple(arm.joint_names)
    assert b.labels()["outputs"][0] == "arm.shoulder_pan" and b.labels()["inputs"][-1] == "arm.gripper"
    assert b.labels(limit=4)["inputs"] == ["arm.shoulder_pan", "arm.shoulder_lift", "arm.elbow_flex", "arm.wrist_flex"]
    if name == "koch":
        assert arm.servo_models[:3] == ["xl430-w250", "xl430-w250", "xl330-m288"] and arm.fast_sync_read
        assert b.channel("arm", "ticks").dtype == np.int32


MISTAKES = [
    (r"^ids = .*$", "ids = [1, 2, 3, 4, 5]", "names must be 5 distinct joint names"),
    (r"^ids = .*$", "ids = [1, 2, 3, 4, 5, 5]", "ids must be a list of distinct servo ids"),
    (r'^servo = "sts3215"$', 'servo = "sts9999"', "no register table for feetech sts9999"),
    (r"^baudrate = .*$", "baudrate = 999", "baudrate must be one of"),
    (r'^failsafe = "hold".*$', 'failsafe = "freeze"', "failsafe must be one of 'hold'"),
    (r"^max_rate = .*$", "max_rate = -1", "max_rate must be a number ≥ 0"),
    (r'^failsafe = "hold".*$\n', 'failsafe = "ramp"\n', None),                  # fine: has a max_rate
    (r"^shape = \[6\]\nrange = \[-3.1416, 3.1416\]\nunits = \"rad\"\nmax_rate",
     'shape = [5]\nrange = [-3.1416, 3.1416]\nunits = "rad"\nmax_rate', "each of shape [6] (one per joint)"),
    (r'^name = "goal"$', 'name = "target"', "a servo bus has position (sensor), goal (actuator), ticks (sensor)"),
    (r"^arm_on_start = false$", "arm_on_start = false\nfast_sync_read = true", "fast_sync_read is a Dynamixel"),
]


@pytest.mark.parametrize("pattern,repl,message", MISTAKES)
def test_servo_bus_mistakes_name_their_line(tmp_path, pattern, repl, message):
    p = tmp_path / "b.toml"
    p.write_text(board_text("so101", path="/dev/null", edits={pattern: repl}))
    if message is None:
        load_board(str(p))
        return
    with pytest.raises(ConfigError, match=r"b\.toml:\d+") as e:
        load_board(str(p))
    assert message in str(e.value)


def test_a_ticks_channel_must_have_the_registers_dtype(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text(board_text("koch", path="/dev/null", edits={r'^dtype = "int32"$': 'dtype = "uint16"'}))
    with pytest.raises(ConfigError, match="Present_Position is int32, the board says uint16"):
        load_board(str(p))


def test_torque_off_and_ramp_need_what_they_use(tmp_path):
    text = open(os.path.join(BOARDS, "cartpole-sim.toml")).read()
    p = tmp_path / "b.toml"
    p.write_text(text.replace('safe = 0.0\nunits = "N"', 'safe = 0.0\nunits = "N"\nfailsafe = "torque_off"'))
    with pytest.raises(ConfigError, match="'torque_off' needs a device with torque"):
        load_board(str(p))
    p.write_text(text.replace('safe = 0.0\nunits = "N"', 'safe = 0.0\nunits = "N"\nfailsafe = "ramp"'))
    with pytest.raises(ConfigError, match="'ramp' needs a max_rate"):
        load_board(str(p))


def test_a_board_whose_joints_differ_from_the_models_action_is_refused(tmp_path):
    from nnos.compiler import compile
    from nnos_models.arms.build import tracker
    import onnx
    onnx.save(tracker(["a", "b", "c", "d", "e"], [0.0] * 5, 0.1, 0.01), str(tmp_path / "five.onnx"))
    board = write_board(tmp_path, "so101", path="/dev/null")
    with pytest.raises(ConfigError, match=r"tensor 'joints' is float32\[1, 5\], but its channels give 6"):
        board.check_plan(compile(str(tmp_path / "five.onnx"), check=False))


def test_calibration_round_trips_and_survives_a_torn_write(tmp_path):
    board = write_board(tmp_path, "so101", path="/dev/null")
    doc = {"board": "so101", **calibration_doc(board)}
    found = cal.parse(doc, board, RES)
    where = cal.save(str(tmp_path), board, found)
    assert cal.load(str(tmp_path), board, RES) == found
    good = open(where, "rb").read()
    open(where, "wb").write(good[: len(good) // 2])                    # a power cut mid-write of another tool
    with pytest.raises(cal.CalibrationError, match="corrupt: not JSON"):
        cal.load(str(tmp_path), board, RES)
    edited = json.loads(good)
    edited["devices"]["arm"]["gripper"]["max"] = 4000                 # changed without its checksum
    open(where, "w").write(json.dumps(edited))
    with pytest.raises(cal.CalibrationError, match="corrupt: its checksum does not match"):
        cal.load(str(tmp_path), board, RES)
    cal.save(str(tmp_path), board, found)                             # a new calibration replaces it
    assert cal.load(str(tmp_path), board, RES) == found
    assert not [n for n in os.listdir(os.path.dirname(where)) if n != "so101.json"], "no temp file left"


def test_a_calibration_of_another_arm_is_refused_naming_what_differs(tmp_path):
    board = write_board(tmp_path, "so101", path="/dev/null")
    doc = {"board": "so101", **calibration_doc(board)}
    with pytest.raises(cal.CalibrationError, match="recorded for board 'koch', this board is 'so101'"):
        cal.parse(dict(doc, board="koch"), board, RES)
    other = json.loads(json.dumps(doc))
    other["devices"]["arm"]["elbow_flex"]["id"] = 9
    with pytest.raises(cal.CalibrationError, match="joint arm.elbow_flex was calibrated on servo 9; the board has servo 3"):
        cal.parse(other, board, RES)
    other = json.loads(json.dumps(doc))
    del other["devices"]["arm"]["gripper"]
    with pytest.raises(cal.CalibrationError, match="device 'arm' has joints .* the calibration gives"):
        cal.parse(other, board, RES)
    other = json.loads(json.dumps(doc))
    other["devices"]["arm"]["gripper"].update(min=3000, max=100)
    with pytest.raises(cal.CalibrationError, match="arm.gripper: min 3000 and max 100 must satisfy"):
        cal.parse(other, board, RES)
