"""The last word on every actuator command, each tick: the channel's rate limit and its failsafe
rule. Whatever staged the commands (the model's bindings, a failsafe, arming, the stop), what
is flushed never differs from the previous command by more than ``max_rate / rate_hz``.

Failsafe per channel (hardware.channels.FAILSAFE_MODES): ``hold`` keeps the last command sent,
``ramp`` and ``value`` go to the safe value (ramp: at max_rate, which it must declare; value:
at once unless a max_rate is declared), ``torque_off`` holds and disarms the device.
Preallocated arrays and ufuncs with ``out=``: nothing allocates per tick.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnos_hardware.channels import ACTUATOR


@dataclass
class _Channel:
    """One driven actuator channel and the rules that limit it."""
    device: str
    name: str
    mode: str
    cmd: np.ndarray              # the device's staged command (a view)
    last: np.ndarray             # what was flushed last
    safe: np.ndarray
    step: np.ndarray             # the most change per tick (0-d); 0: no limit
    lo: np.ndarray
    hi: np.ndarray


class Actuators:
    def __init__(self, board, devices: dict, rate_hz: float):
        self.devices = devices
        self.channels: list[_Channel] = []
        for d in board.devices:
            dev = devices.get(d.name)
            if dev is None:
                continue
            for c in d.channels:
                if c.kind != ACTUATOR:
                    continue
                cmd = dev.commands[c.name].reshape(-1)
                self.channels.append(_Channel(d.name, c.name, c.failsafe, cmd, cmd.copy(), np.full_like(cmd, c.safe),
                                              np.array(c.max_rate / rate_hz, cmd.dtype), np.empty_like(cmd),
                                              np.empty_like(cmd)))
        self.limited = [c for c in self.channels if c.step > 0]
        self.torque_off = sorted({c.device for c in self.channels if c.mode == "torque_off"})
        self.to_safe = [c for c in self.channels if c.mode in ("ramp", "value")]
        self.to_hold = [c for c in self.channels if c.mode in ("hold", "torque_off")]

    def limit(self) -> None:
        """After the commands are staged: no channel moves more than its step from the last."""
        for c in self.limited:
            np.subtract(c.last, c.step, out=c.lo)
            np.add(c.last, c.step, out=c.hi)
            np.maximum(c.cmd, c.lo, out=c.cmd)
            np.minimum(c.cmd, c.hi, out=c.cmd)
        for c in self.channels:
            np.copyto(c.last, c.cmd)

    def failsafe(self) -> None:
        """Stage each channel's failsafe command (``limit`` runs after, as every tick)."""
        for c in self.to_hold:
            np.copyto(c.cmd, c.last)
        for c in self.to_safe:
            np.copyto(c.cmd, c.safe)
        for name in self.torque_off:
            dev = self.devices[name]
            if dev.armed:
                dev.disarm()

    def settle(self, device: str) -> None:
        """The device just armed with its commands at the present positions: start from there."""
        for c in self.channels:
            if c.device == device:
                np.copyto(c.last, c.cmd)

    def settled(self) -> bool:
        """Every channel that goes to its safe value is there."""
        return all(np.array_equal(c.last, c.safe) for c in self.to_safe)

    def ticks_to_settle(self) -> int:
        """How many ticks the slowest ramp to a safe value still needs."""
        return max([int(np.ceil(np.max(np.abs(c.last - c.safe)) / c.step)) for c in self.to_safe if c.step > 0] or [1])
