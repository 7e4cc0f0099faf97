"""The loop driving a real servo bus device (the SO-101 board) against the simulated Feetech
bus over a pty: arming moves nothing, the tracking policy moves the arm, and every failsafe
cause — a stale bus, a NaN output, an overrun streak, a lost device, the stop — leaves every
joint's command within its max_rate in every tick, on the loop's side and on the wire."""
from __future__ import annotations

import math
import signal

import numpy as np
import pytest

from nnos.runtime.loop import Loop, LoopConfig
from nnos.store import ModelStore
from nnos.telemetry import TelemetryWriter
from nnos.timing import RateKeeper
from nnos_hardware import calibration as cal
from nnos_hardware.devices.factory import make_devices
from nnos_hardware.errors import DeviceError
from tests.support.arms import calibration_doc, goal_jumps, read_trace, write_board
from tests.support.policies import store_model
from tests.support.servo_sim import servo_bus_process
from tests.support.timing import scaled, wait_until

TICK = 2 * math.pi / 4096


class Arm:
    """The so101 board's loop in-process, ticked by the test at the board's rate; every tick's
    flushed goal is kept (the loop's side of the check)."""

    def __init__(self, tmp_path, port, edits=None, calibrate=True):
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.board = write_board(tmp_path, "so101", path=port, edits=edits)
        self.devices = make_devices(self.board)
        self.dev = self.devices["arm"]
        self.dev.open()
        self.store = ModelStore(str(tmp_path / "data"))
        if calibrate:
            found = cal.parse({"board": self.board.name, **calibration_doc(self.board)}, self.board, lambda d: 4096)
            cal.save(self.store.data_dir, self.board, found)
        self.store.activate(store_model(self.store, self.board.model), "test")
        self.tel = TelemetryWriter(str(tmp_path / "telemetry"))
        self.logs = []
        self.loop = Loop(self.board, self.devices, self.store, self.tel, LoopConfig(probation_s=0.1),
                         log=self.logs.append)
        self.loop.apply_calibration()
        self.loop.load_initial()
        self.goals = []
        self.keeper = RateKeeper(self.board.rate_hz)
        self.step = self.board.channel("arm", "goal").max_rate / self.board.rate_hz

    def ticks(self, n: int) -> None:
        for _ in range(n):
            self.keeper.wait()
            self.loop.tick()
            self.goals.append(self.dev.commands["goal"].copy())

    def wait_read(self) -> None:
        """Until the bus has been read and the start-up failsafe (no reading yet) is over."""
        wait_until(lambda: self.ticks(1) or (self.dev.latest("position").count > 0 and not self.loop.safety.active),
                   scaled(10), "a first reading and the loop out of failsafe", context=lambda: self.loop.safety.reason)
        self.goals.clear()

    def position(self) -> np.ndarray:
        return self.dev.latest("position").values.copy()

    def worst_step(self, since: int = 0) -> float:
        g = np.array(self.goals[since:])
        return float(np.abs(np.diff(g, axis=0)).max()) if len(g) > 1 else 0.0

    def close(self) -> None:
        self.loop.shutdown()
        self.tel.close()


def torque_off_seen(trace: str) -> list:
    """The bus trace, once its last torque write is every servo off (the stop disarmed)."""
    def off():
        writes = [v for _, reg, v in read_trace(trace) if reg == "Torque_Enable"]
        return writes and writes[-1] == {i: 0 for i in range(1, 7)}
    wait_until(off, scaled(5), "torque off on every servo", context=lambda: open(trace).read()[-500:])
    return read_trace(trace)


@pytest.fixture
def arm_sim(tmp_path):
    trace = tmp_path / "bus.trace"
    with servo_bus_process("feetech-arm", "--servos", "6", "--trace", str(trace)) as (port, proc):
        yield port, proc, str(trace)


def test_arming_needs_a_calibration_and_names_the_joints(tmp_path, arm_sim):
    port, _, _ = arm_sim
    a = Arm(tmp_path, port, calibrate=False)
    try:
        a.wait_read()
        with pytest.raises(DeviceError, match="no calibration for joints shoulder_pan, shoulder_lift, .*gripper"):
            a.loop.arm("arm")
        assert not a.dev.armed
    finally:
        a.close()


def test_arm_then_track_then_stop_never_jumps(tmp_path, arm_sim):
    port, _, trace = arm_sim
    a = Arm(tmp_path, port)
    try:
        a.wait_read()
        start = a.position()
        a.loop.arm("arm")
        a.ticks(5)                                     # armed: the first goals are where the joints are...
        assert np.abs(a.goals[0] - start).max() <= a.step + TICK
        a.ticks(150)                                   # ...then the policy moves them, at most max_rate
        moved = a.position() - start
        assert np.abs(moved).max() > 0.3, (moved, a.logs, a.dev.stats())
        assert a.worst_step() <= a.step * (1 + 1e-5)
        assert not a.loop.safety.active, a.loop.safety.reason
    finally:
        a.close()
    t = torque_off_seen(trace)
    assert goal_jumps(t, a.step / TICK, 1 / a.board.rate_hz) == []


def test_every_failsafe_cause_holds_the_arm_within_its_rate(tmp_path, arm_sim):
    port, proc, trace = arm_sim
    a = Arm(tmp_path, port)
    try:
        a.wait_read()
        a.loop.arm("arm")
        a.ticks(60)
        causes = {}
        # a stale bus: the servos stop answering for a while
        proc.send_signal(signal.SIGSTOP)
        a.ticks(30)
        proc.send_signal(signal.SIGCONT)
        causes["stale"] = a.loop.safety.reason
        assert all(np.array_equal(g, a.goals[-1]) for g in a.goals[-15:]), "hold: the goal stays where it was"
        a.ticks(60)
        # a NaN output
        real, out = a.loop.active.run, a.loop.active.outputs[0].view()
        out.flags.writeable = True                     # the arena's memory (read-only to the loop's readers)
        a.loop.active.run = lambda: (real(), out.fill(np.nan))
        a.ticks(10)
        causes["nan"] = a.loop.safety.reason
        a.loop.active.run = real
        a.ticks(60)
        # an overrun streak
        budget, a.loop.budget = a.loop.budget, 0
        a.ticks(10)
        causes["overrun"] = a.loop.safety.reason
        a.loop.budget = budget
        a.ticks(60)
        assert "stale" in causes["stale"] and "shoulder_pan" in causes["stale"], causes
        assert "NaN" in causes["nan"], causes
        assert "overruns in a row" in causes["overrun"], causes
        assert a.worst_step() <= a.step * (1 + 1e-5)
        assert a.loop.tel.c[a.loop.tel.idx["failsafe_entries"]] >= 3
    finally:
        a.close()
    assert goal_jumps(read_trace(trace), a.step / TICK, 1 / a.board.rate_hz) == []


def test_a_lost_bus_fails_safe_and_is_never_written_to(tmp_path, arm_sim):
    port, proc, trace = arm_sim
    a = Arm(tmp_path, port)
    try:
        a.wait_read()
        a.loop.arm("arm")
        a.ticks(50)
        proc.kill()
        proc.wait()
        wait_until(lambda: a.ticks(1) or "lost" in a.loop.safety.reason, scaled(5), "the bus lost")
        a.ticks(20)
        assert a.loop.safety.active
        assert a.worst_step() <= a.step * (1 + 1e-5)
    finally:
        a.close()
    assert goal_jumps(read_trace(trace), a.step / TICK, 1 / a.board.rate_hz) == []


@pytest.mark.parametrize("mode", ["ramp", "value", "torque_off"])
def test_failsafe_modes_on_stop(tmp_path, arm_sim, mode):
    """ramp and value (with a max_rate) glide to the safe pose; torque_off holds and disarms."""
    port, _, trace = arm_sim
    a = Arm(tmp_path, port, edits={r'^failsafe = "hold".*$': f'failsafe = "{mode}"'})
    try:
        a.wait_read()
        a.loop.arm("arm")
        a.ticks(80)
        before = a.dev.commands["goal"].copy()
        assert np.abs(before).max() > 0.1, (a.logs, a.dev.stats())
        a.loop.stop = True
        n = a.loop.wind_down()
        after = a.dev.commands["goal"].copy()
        if mode == "torque_off":
            assert np.array_equal(after, before)
        else:
            assert np.allclose(after, 0.0, atol=1e-6), after
            assert n >= np.abs(before).max() / a.step - 1, "it took as many ticks as the ramp needs"
    finally:
        a.close()
    t = torque_off_seen(trace)
    assert goal_jumps(t, a.step / TICK, 1 / a.board.rate_hz) == []


def test_arm_on_start_arms_once_read_and_says_once_why_not(tmp_path, arm_sim):
    port, _, _ = arm_sim
    a = Arm(tmp_path / "a", port, edits={r"^arm_on_start = false$": "arm_on_start = true"})
    try:
        a.loop.run(None, scaled(1.0))
        assert a.dev.armed, a.logs
        assert "loop: arm armed" in a.logs
    finally:
        a.close()
    b = Arm(tmp_path / "b", port, edits={r"^arm_on_start = false$": "arm_on_start = true"}, calibrate=False)
    try:
        b.loop.run(None, scaled(1.0))
        assert not b.dev.armed
        said = [m for m in b.logs if "arm_on_start" in m]
        assert len(said) == 1 and "no calibration for joints shoulder_pan" in said[0], b.logs
    finally:
        b.close()


def test_a_raw_ticks_channel_carries_the_registers_int16(tmp_path, arm_sim):
    """The board may declare `ticks`, the raw Present_Position in its register's own type (the
    STS3215's sign-and-magnitude word: int16); the network still sees radians."""
    port, _, _ = arm_sim
    ticks = ('[[devices.channels]]\nname = "ticks"\nkind = "sensor"\nshape = [6]\nrange = [0, 4095]\n'
             'dtype = "int16"\n\n[[devices.channels]]\nname = "goal"')
    a = Arm(tmp_path, port, edits={r'^\[\[devices.channels\]\]\nname = "goal"': ticks})
    try:
        a.wait_read()
        raw = a.dev.latest("ticks").values
        assert raw.dtype == np.int16 and raw.tolist() == [2048] * 6
        assert np.allclose(a.position(), 0.0), "the network's input: radians from the calibration"
    finally:
        a.close()
