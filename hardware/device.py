"""The device interface every driver, simulator and replayer implements.

A device exposes named channels. ``poll`` takes in whatever the device sent and updates the
latest Sample of each sensor channel in place; ``write`` stages actuator values and ``flush``
sends them. Devices are context managers.
"""
from __future__ import annotations

import abc

import numpy as np

from .channels import ACTUATOR, SENSOR, Channel, Sample
from .errors import DeviceError


class Device(abc.ABC):
    reconnectable = False       # a lost one can be closed and opened again (a serial port that comes back)
    armable = False             # has torque to switch on and off (arm / disarm: servo buses)

    def __init__(self, name: str):
        self.name = name
        self.channels: dict[str, Channel] = {}
        self.samples: dict[str, Sample] = {}
        self.commands: dict[str, np.ndarray] = {}
        self.is_open = False

    # --- lifecycle ------------------------------------------------------------------------
    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def retarget(self, path: str) -> None:
        """Where the device is now (hotplug found it at another path); used by the next open."""
        raise DeviceError(self.name, f"{type(self).__name__} has no path to change (asked for {path!r})")

    def arm(self) -> None:
        raise DeviceError(self.name, f"{type(self).__name__} has no torque to arm")

    def disarm(self) -> None:
        raise DeviceError(self.name, f"{type(self).__name__} has no torque to disarm")

    @property
    def armed(self) -> bool:
        return False

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    # --- data -----------------------------------------------------------------------------
    @abc.abstractmethod
    def poll(self, timeout: float = 0.0) -> int:
        """Take in what the device sent within ``timeout`` s; returns the new readings count."""

    @abc.abstractmethod
    def flush(self, ref_timestamp_us: int = 0) -> None:
        """Send the staged actuator values (``ref_timestamp_us``: the sensor time they answer)."""

    def write(self, channel: str, values) -> None:
        ch = self.channels.get(channel)
        if ch is None or ch.kind != ACTUATOR:
            raise DeviceError(self.name, f"no actuator channel {channel!r}; actuators: "
                              f"{[c for c, v in self.channels.items() if v.kind == ACTUATOR]}")
        np.copyto(self.commands[channel], values, casting="same_kind")

    def write_safe(self) -> None:
        """Stage every actuator's declared safe value."""
        for name, ch in self.channels.items():
            if ch.kind == ACTUATOR:
                self.commands[name].fill(ch.safe)

    def latest(self, channel: str) -> Sample:
        s = self.samples.get(channel)
        if s is None:
            raise DeviceError(self.name, f"no sensor channel {channel!r}; sensors: {sorted(self.samples)}")
        return s

    def stats(self) -> dict:
        return {}

    def stale_detail(self, channel: str) -> str:
        """More about a stale sensor channel (which of its parts stopped), or ''."""
        return ""

    # --- helpers for subclasses -----------------------------------------------------------
    def _set_channels(self, channels: list[Channel]) -> None:
        """(Re)define the channels. Arrays of channels that keep their shape are kept, so whoever
        holds them (the loop's bindings) keeps reading the live ones after a reconnect."""
        old_s, old_c = self.samples, self.commands
        self.channels = {c.name: c for c in channels}
        self.samples, self.commands = {}, {}
        for c in channels:
            if c.kind == SENSOR:
                keep = old_s.get(c.name)
                self.samples[c.name] = keep if keep is not None and keep.values.shape == c.shape else Sample(c)
            else:
                keep = old_c.get(c.name)
                self.commands[c.name] = keep if keep is not None and keep.shape == c.shape else np.full(c.shape, c.safe, c.dtype)
                self.commands[c.name].fill(c.safe)

    def _require_open(self):
        if not self.is_open:
            raise DeviceError(self.name, "device is not open")
