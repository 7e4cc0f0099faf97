"""The cart-pole (Barto, Sutton & Anderson 1983; the dynamics of gym's CartPole) as a device.

State x, ẋ, θ, θ̇; one force actuator. Integrated with semi-implicit Euler at ``physics_hz``;
sensors sampled at ``sensor_hz`` with optional Gaussian noise and a fixed delay. Two clocks:
real time (the device runs on the wall clock, as hardware does) or lockstep (each sensor
frame waits for the host's command, for closed-loop tests faster than real time).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from ..protocol import frames as fr

GRAVITY, M_CART, M_POLE, HALF_LENGTH = 9.8, 1.0, 0.1, 0.5
FORCE_MAX = 10.0
X_LIMIT, THETA_LIMIT = 2.4, 12 * math.pi / 180


def channels() -> list[fr.ChannelInfo]:
    return [
        fr.ChannelInfo(1, "cart", fr.SENSOR, (2,), 0, -4.8, 4.8, units="m, m/s"),
        fr.ChannelInfo(2, "pole", fr.SENSOR, (2,), 0, -math.pi, math.pi, units="rad, rad/s"),
        fr.ChannelInfo(3, "force", fr.ACTUATOR, (1,), 0, -FORCE_MAX, FORCE_MAX, safe=0.0, units="N"),
    ]


def _accelerations(force, th_dot, ct, st):
    """(ẍ, θ̈) from the force and the pole's state: numbers or numpy arrays alike."""
    total = M_CART + M_POLE
    tmp = (force + M_POLE * HALF_LENGTH * th_dot * th_dot * st) / total
    th_acc = (GRAVITY * st - ct * tmp) / (HALF_LENGTH * (4.0 / 3.0 - M_POLE * ct * ct / total))
    return tmp - M_POLE * HALF_LENGTH * th_acc * ct / total, th_acc


def step(state, force: float, dt: float) -> None:
    """Advance ``state`` = [x, ẋ, θ, θ̇] (a list or an array) in place by ``dt`` seconds under ``force`` newtons."""
    x, x_dot, th, th_dot = state
    x_acc, th_acc = _accelerations(force, th_dot, math.cos(th), math.sin(th))
    x_dot += dt * x_acc
    th_dot += dt * th_acc
    state[0], state[1], state[2], state[3] = x + dt * x_dot, x_dot, th + dt * th_dot, th_dot


def step_many(states: np.ndarray, force: np.ndarray, dt: float) -> None:
    """step() for N cart-poles side by side: ``states`` [N, 4] in place, ``force`` [N] newtons."""
    x, x_dot, th, th_dot = states.T
    x_acc, th_acc = _accelerations(force, th_dot, np.cos(th), np.sin(th))
    x_dot = x_dot + dt * x_acc
    th_dot = th_dot + dt * th_acc
    states[:, 0], states[:, 2] = x + dt * x_dot, th + dt * th_dot
    states[:, 1], states[:, 3] = x_dot, th_dot


def failed(state) -> bool:
    return abs(state[0]) > X_LIMIT or abs(state[2]) > THETA_LIMIT


def failed_many(states: np.ndarray) -> np.ndarray:
    """failed() of each row of ``states`` [N, 4]."""
    return (np.abs(states[:, 0]) > X_LIMIT) | (np.abs(states[:, 2]) > THETA_LIMIT)


@dataclass
class Config:
    """The simulated cart-pole's rates, noise and physics."""
    sensor_hz: float = 50.0
    physics_hz: float = 1000.0
    noise: float = 0.0            # std of Gaussian sensor noise (same units as each reading)
    delay_ticks: int = 0          # sensor frames are this many periods old
    start_range: float = 0.05     # initial state uniform in ±start_range (gym's reset)
    seed: int = 0


class CartPole:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        # the standard library's generator: numpy.random's import is 0.26 s of an emulated boot,
        # before the simulator's port exists and the loop can start (RESULTS.md, issue 21)
        self.rng = random.Random(cfg.seed)
        self.state = np.zeros(4)
        self.history: list[np.ndarray] = []
        self.reset()

    def reset(self) -> None:
        r = self.cfg.start_range
        self.state[:] = [self.rng.uniform(-r, r) for _ in range(4)]
        self.history = [self.state.copy() for _ in range(self.cfg.delay_ticks + 1)]
        self.t = 0.0

    def advance(self, force: float) -> None:
        """One sensor period of physics under a constant force (zero-order hold)."""
        n = max(1, round(self.cfg.physics_hz / self.cfg.sensor_hz))
        dt = 1.0 / (n * self.cfg.sensor_hz)
        f = float(np.clip(force, -FORCE_MAX, FORCE_MAX))
        # the substeps on Python floats (the same IEEE doubles as numpy's scalars, a third of the
        # time: a simulator under emulation shares the device's CPUs with what it simulates for)
        state = self.state.tolist()
        for _ in range(n):
            step(state, f, dt)
        self.state[:] = state
        self.t += n * dt
        self.history.append(self.state.copy())
        del self.history[0]

    def reading(self) -> dict[int, np.ndarray]:
        s = self.history[0]
        if self.cfg.noise:
            s = s + np.array([self.rng.gauss(0.0, self.cfg.noise) for _ in range(4)])
        return {1: s[:2].astype(np.float32), 2: s[2:].astype(np.float32)}
