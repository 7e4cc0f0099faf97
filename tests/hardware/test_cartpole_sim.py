"""The simulated cart-pole as a separate process on a pty, and the trained policy balancing it
over that serial link."""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

import nnos
from nnos_hardware.binding import Binder
from nnos_hardware.board import load_board
from nnos_hardware.devices import NnosSerialDevice
from nnos_hardware.errors import TransportError
from nnos_hardware.sim import cartpole
from nnos_hardware.spawn import start_simulator
from tests.support.paths import ROOT
from tests.support.timing import scaled

BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")


def _summary(proc) -> list[dict]:
    out, _ = proc.communicate(timeout=10)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def test_dynamics_match_the_reference_equations():
    # one gym CartPole step (tau 0.02, Euler) with force 10 from rest at theta = 0.1
    s = np.array([0.0, 0.0, 0.1, 0.0])
    cartpole.step(s, 10.0, 0.02)
    total, pm_l = 1.1, 0.05
    temp = (10.0 + pm_l * 0 * np.sin(0.1)) / total
    th_acc = (9.8 * np.sin(0.1) - np.cos(0.1) * temp) / (0.5 * (4 / 3 - 0.1 * np.cos(0.1) ** 2 / total))
    x_acc = temp - pm_l * th_acc * np.cos(0.1) / total
    assert s[1] == pytest.approx(0.02 * x_acc)
    assert s[3] == pytest.approx(0.02 * th_acc)


def test_a_sensor_period_is_its_physics_steps_bit_for_bit():
    """advance() runs its substeps on Python floats (a third of the time of numpy scalars): the
    same doubles, so the trajectory is the array step()'s to the last bit, forces clipped."""
    sim = cartpole.CartPole(cartpole.Config(seed=5))
    state = sim.state.copy()
    rng = np.random.default_rng(1)
    for force in rng.uniform(-15.0, 15.0, 500):
        sim.advance(force)
        for _ in range(20):                              # physics 1000 Hz, sensors 50 Hz
            cartpole.step(state, float(np.clip(force, -cartpole.FORCE_MAX, cartpole.FORCE_MAX)), 1.0 / 1000)
        assert sim.state.tobytes() == state.tobytes()
    assert cartpole.failed(state)                        # far from rest: the forces were random


def test_sim_prints_its_port_and_streams_at_its_rate():
    board = load_board(BOARD)
    proc, port = start_simulator(["python", "-m", "nnos_hardware.sim", "cartpole", "--sensor-hz", "100"], "cartpole")
    try:
        assert port.startswith("/dev/pts/")
        with NnosSerialDevice("cartpole", port, expected=board.devices[0].channels) as dev:
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                dev.poll(0.05)
            n0, t0 = dev.latest("cart").count, time.monotonic()
            while time.monotonic() - t0 < 1.0:
                dev.poll(0.05)
            rate = (dev.latest("cart").count - n0) / (time.monotonic() - t0)
            assert 80 < rate < 120, rate
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def test_silent_host_puts_the_actuator_in_failsafe():
    board = load_board(BOARD)
    proc, port = start_simulator(["python", "-m", "nnos_hardware.sim", "cartpole", "--host-timeout", "0.2"], "cartpole")
    dev = NnosSerialDevice("cartpole", port, expected=board.devices[0].channels)
    dev.open()
    dev.write("force", [5.0])
    dev.flush()
    time.sleep(0.6)                      # no heartbeat, no command: the device must go safe
    proc.send_signal(signal.SIGTERM)
    summary = _summary(proc)[-1]
    assert summary["failsafe_entries"] >= 1
    assert summary["commands"] >= 1
    with pytest.raises(TransportError):
        for _ in range(50):
            dev.poll(0.05)
    dev.close()


EPISODES = 30


@pytest.mark.slow
def test_trained_policy_balances_through_the_serial_simulator():
    """30 episodes of 60 s simulated time at 50 Hz from random starts (fixed seed), each tick
    a real round trip over the pty: sensor frame → plan → actuator frame (90 000 of them; the
    training script checks 100 episodes in its own numpy simulation)."""
    board = load_board(BOARD)
    plan = nnos.compile(board.model)
    board.check_plan(plan)
    cfg = board.devices[0]
    # lockstep has no real time: the device-side watchdog waits as long as this machine's load
    # may hold the host (a loaded run had one failsafe entry at the fixed 0.5 s)
    proc, port = start_simulator(cfg.simulator + ["--lockstep", "--episodes", str(EPISODES), "--duration", "60",
                                                  "--seed", "2026", "--noise", "0.002",
                                                  "--host-timeout", f"{scaled(2.0):.1f}"], "cartpole")
    exe = plan.bind()
    ticks = 0
    try:
        with NnosSerialDevice("cartpole", port, expected=cfg.channels) as dev:
            binder = Binder(board, {"cartpole": dev}, exe.inputs, exe.outputs)
            last = 0
            while proc.poll() is None:
                try:
                    dev.poll(0.5)
                except TransportError:
                    break                                   # the simulator finished and closed
                s = dev.latest("pole")
                if s.count == last:
                    continue
                last = s.count
                binder.read_inputs()
                exe.run()
                binder.write_outputs()
                dev.flush(s.t_device_us)
                ticks += 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    lines = _summary(proc)
    episodes = [x for x in lines if "episode" in x]
    done = lines[-1]
    assert done["done"]
    assert done["episodes"] == EPISODES
    assert len(episodes) == EPISODES
    assert done["ok"] >= 0.95 * EPISODES, [e for e in episodes if not e["ok"]][:5]
    assert all(e["ticks"] == 3000 for e in episodes if e["ok"])
    assert done["failsafe_entries"] == 0
    assert done["refused"] == 0
    assert ticks >= 0.95 * EPISODES * 3000


def test_a_fallen_pole_is_stood_up_again_so_readings_stay_in_range():
    """Realtime: with no push the pole falls within a couple of seconds; the simulator resets it
    (as a person would) instead of letting it swing outside the sensors' declared ranges,
    which the loop would rightly treat as a fault."""
    board = load_board(BOARD)
    cfg = board.devices[0]
    proc, port = start_simulator(cfg.simulator, "cartpole")
    thetas = []
    try:
        with NnosSerialDevice("cartpole", port, expected=cfg.channels) as dev:
            end = time.monotonic() + 5.0
            while time.monotonic() < end:
                dev.poll(0.05)
                thetas.append(float(dev.latest("pole").values[0]))
                dev.write("force", np.zeros(1, np.float32))
                dev.flush(dev.latest("pole").t_device_us)
            assert dev.latest("pole").out_of_range == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert max(abs(t) for t in thetas) < 0.3
    assert len(thetas) > 50
