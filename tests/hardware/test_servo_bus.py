"""nnos's servo bus device (Feetech and Dynamixel) against the simulated buses over a real pty:
open checks every servo, arming moves nothing, goals are followed, a servo that stops answering
makes only its joint stale — and the loop's side (poll, flush) never waits on the bus."""
from __future__ import annotations

import math
import time

import pytest

from nnos_hardware.calibration import JointCalibration
from nnos_hardware.devices.servo_bus import ServoBusDevice
from nnos_hardware.errors import DeviceError, HardwareError
from nnos_hardware.transport import set_latency_timer
from tests.support.servo_sim import servo_bus, servo_bus_process
from tests.support.timing import report_retry, scaled, wait_until

JOINTS = {"shoulder_pan": 1, "shoulder_lift": 2, "elbow_flex": 3}
BUSES = [("feetech-arm", "feetech", "sts3215"), ("dynamixel-arm", "dynamixel", "xl430-w250")]


def positions(dev) -> dict[str, float]:
    return dict(zip(JOINTS, map(float, dev.latest("position").values)))


def tick(dev, goals: dict[str, float] | None = None) -> None:
    """What the loop does each tick: poll, write, flush."""
    dev.poll(0.0)
    if goals:
        goal = dev.commands["goal"]
        for k, j in enumerate(JOINTS):
            if j in goals:
                goal[k] = goals[j]
    dev.flush()


def centred(span=1500) -> dict[str, JointCalibration]:
    return {j: JointCalibration(i, 2048, 1, 2048 - span, 2048 + span) for j, i in JOINTS.items()}


@pytest.mark.parametrize("robot,vendor,model", BUSES)
def test_open_arm_and_follow_goals(robot, vendor, model):
    with servo_bus(robot, "--servos", "3") as path:
        dev = ServoBusDevice("arm", path, vendor, model, JOINTS)
        dev.open()
        try:
            wait_until(lambda: dev.poll() or dev.latest("position").count, 5, "a first reading of every joint")
            assert positions(dev) == {j: 0.0 for j in JOINTS}, "uncalibrated: the servo's centre is 0 rad"
            with pytest.raises(DeviceError, match="cannot arm: no calibration for joints shoulder_pan, shoulder_lift, "
                               "elbow_flex"):
                dev.arm()
            dev.set_calibration(centred())
            dev.arm()
            for _ in range(20):                  # armed, the goal is where the joints are: nothing moves
                tick(dev)
                time.sleep(0.01)
            assert max(abs(v) for v in positions(dev).values()) < 1e-9
            goal = {"shoulder_pan": 0.5, "shoulder_lift": -0.3, "elbow_flex": 0.0}
            step = 2 * math.pi / 4096

            def arrived():
                tick(dev, goal)
                time.sleep(0.01)
                return all(abs(positions(dev)[j] - g) <= step for j, g in goal.items())
            wait_until(arrived, 10, "the joints at their goals")
            assert dev.stats()["transactions"] > 20
            assert dev.stats()["checksum_errors"] == 0
        finally:
            dev.disarm()
            dev.close()


@pytest.mark.parametrize("robot,vendor,model", BUSES)
def test_a_servo_that_stops_answering_makes_its_joint_stale_and_nothing_waits(robot, vendor, model):
    with servo_bus(robot, "--servos", "3", "--silent-after", "2:1.5") as path:
        # the simulator is a process on this (maybe busy) host: its answers get the host's slack
        dev = ServoBusDevice("arm", path, vendor, model, JOINTS, latency_s=scaled(0.002))
        dev.open()
        try:
            worst = 0.0
            end = time.monotonic() + scaled(3.0)
            while time.monotonic() < end:
                t0 = time.perf_counter()
                tick(dev, {"shoulder_pan": 0.1})
                worst = max(worst, time.perf_counter() - t0)
                time.sleep(0.01)
            age = time.monotonic() - dev.latest("position").t_host
            assert age > 1.0, age                 # the channel is as old as its stalest joint
            assert "shoulder_lift (servo 2" in dev.stale_detail("position")
            assert "shoulder_pan" not in dev.stale_detail("position")
            _, seen = dev.raw_positions()
            assert time.monotonic() - seen[0] < 0.5 and time.monotonic() - seen[2] < 0.5, seen
            st = dev.stats()
            assert st["shoulder_lift_missing"] > 10
            late = st["shoulder_pan_missing"] + st["elbow_flex_missing"]      # answers a stalled host delivered late
            if late:
                report_retry("servo bus: healthy servos", f"{late} answers missed a deadline of {st['transactions']}")
            assert late <= st["transactions"] // 20, st
            if worst > 0.002:
                report_retry("servo bus: poll+flush", f"one took {worst * 1e3:.1f} ms on a busy host")
            assert worst < scaled(0.02), f"the loop's side waited {worst * 1e3:.1f} ms on the bus"
        finally:
            dev.close()


def test_error_bits_are_counted_per_servo_by_name():
    with servo_bus("feetech-arm", "--servos", "3", "--error", "3:0x24") as path:
        dev = ServoBusDevice("arm", path, "feetech", "sts3215", JOINTS)
        dev.open()
        try:
            wait_until(lambda: dev.stats().get("elbow_flex_overload", 0) >= 3, 5, "servo 3's overload counted")
            st = dev.stats()
            assert st["elbow_flex_overheating"] >= 3
            assert "shoulder_pan_overload" not in st
        finally:
            dev.close()


def test_open_names_a_missing_servo_and_a_wrong_model():
    with servo_bus("feetech-arm", "--servos", "2") as path:
        with pytest.raises(DeviceError, match=r"servo 3 on .* did not answer \(is it powered, is its id 3"):
            ServoBusDevice("arm", path, "feetech", "sts3215", JOINTS).open()
    with servo_bus("dynamixel-arm", "--servos", "3", "--model", "xl330-m288") as path:
        with pytest.raises(DeviceError, match=r"servo 1 \(shoulder_pan\) is model number 1200, expected 1060 \(xl430-w250\)"):
            ServoBusDevice("arm", path, "dynamixel", "xl430-w250", JOINTS).open()


def test_a_servo_answering_with_another_id_is_counted_and_its_joint_goes_stale():
    with servo_bus("feetech-arm", "--servos", "3", "--answer-as", "2:9") as path:
        dev = ServoBusDevice("arm", path, "feetech", "sts3215", JOINTS)
        with pytest.raises(DeviceError, match="servo 2 on .* did not answer"):
            dev.open()                                # its own id never answers: refused at open, by id
        assert dev.link.stray >= 1, "the answer from id 9 was seen and counted, not taken for servo 2"


def test_goals_beyond_the_calibrated_limits_are_clamped_and_counted():
    with servo_bus("feetech-arm", "--servos", "3") as path:
        dev = ServoBusDevice("arm", path, "feetech", "sts3215", JOINTS)
        dev.open()
        try:
            dev.set_calibration(centred(span=300))    # ±300 ticks ≈ ±0.46 rad
            wait_until(lambda: dev.poll() or dev.latest("position").count, 5, "a first reading")
            time.sleep(0.05)
            dev.arm()

            def at_limit():
                tick(dev, {"shoulder_pan": 3.0})      # far beyond the calibrated range
                time.sleep(0.01)
                return abs(positions(dev)["shoulder_pan"] - 300 * 2 * math.pi / 4096) < 2e-3
            wait_until(at_limit, 10, "shoulder_pan at its calibrated limit, no further")
            assert dev.stats()["shoulder_pan_clamped"] > 0
            assert dev.stats()["elbow_flex_clamped"] == 0
        finally:
            dev.close()


def test_a_bus_unplugged_mid_transaction_is_an_error_at_the_next_poll():
    with servo_bus_process("feetech-arm", "--servos", "3") as (path, proc):
        dev = ServoBusDevice("arm", path, "feetech", "sts3215", JOINTS)
        dev.open()
        try:
            wait_until(lambda: dev.poll() or dev.latest("position").count, 5, "a first reading")
            proc.kill()
            proc.wait()

            def raised():
                try:
                    tick(dev)
                except HardwareError as e:
                    return str(e)
                time.sleep(0.01)
            err = wait_until(raised, 5, "poll to raise")
            assert "arm:" in err and path in err
        finally:
            dev.close()


def test_arming_refuses_a_joint_outside_its_calibrated_range():
    with servo_bus("feetech-arm", "--servos", "3") as path:
        dev = ServoBusDevice("arm", path, "feetech", "sts3215", JOINTS)
        dev.open()
        try:
            cal = centred()
            cal["elbow_flex"] = JointCalibration(3, 3000, 1, 2900, 3100)      # the servo sits at 2048
            dev.set_calibration(cal)
            wait_until(lambda: dev.poll() or dev.latest("position").count, 5, "a first reading")
            time.sleep(0.05)
            with pytest.raises(DeviceError, match=r"elbow_flex at tick 2048 \(calibrated 2900..3100\) — outside"):
                dev.arm()
            assert not dev.armed
        finally:
            dev.close()


def test_the_usb_latency_timer_is_lowered_where_the_adapter_has_one(tmp_path):
    knob = tmp_path / "bus" / "usb-serial" / "devices" / "ttyUSB0"
    knob.mkdir(parents=True)
    (knob / "latency_timer").write_text("16\n")
    assert set_latency_timer("/dev/ttyUSB0", 1, str(tmp_path)) == "ttyUSB0: latency timer 16 → 1 ms"
    assert (knob / "latency_timer").read_text() == "1"
    assert "already 1 ms" in set_latency_timer("/dev/ttyUSB0", 1, str(tmp_path))
    assert "not a USB serial adapter" in set_latency_timer("/dev/pts/3", 1, str(tmp_path))
    assert "not a USB serial adapter" in set_latency_timer("/dev/ttyACM0", 1, str(tmp_path))
