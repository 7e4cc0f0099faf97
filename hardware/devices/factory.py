"""The board's ``driver`` names and the device each one builds (the board's TOML is data; this
table is the one place a driver name becomes a class)."""
from __future__ import annotations

from ..device import Device
from ..recording import ReplayDevice
from .nnos_serial import NnosSerialDevice
from .servo_bus import ServoBusDevice


def _serial(cfg, path: str | None) -> Device:
    return NnosSerialDevice(cfg.name, path or cfg.path or "", expected=cfg.channels)


def _replay(cfg, path: str | None) -> Device:
    return ReplayDevice(cfg.name, path or cfg.recording, loop=True)


def _servo_bus(cfg, path: str | None) -> Device:
    return ServoBusDevice(cfg.name, path or cfg.path or "", cfg.driver, cfg.servo_models,
                          dict(zip(cfg.joint_names, cfg.servo_ids)), cfg.baudrate, channels=cfg.channels,
                          fast_sync_read=cfg.fast_sync_read)


DRIVERS = {"nnos-serial": _serial, "replay": _replay, "feetech": _servo_bus, "dynamixel": _servo_bus}
SERVO_BUSES = ("feetech", "dynamixel")


def make_device(cfg, path: str | None = None) -> Device:
    """The device for one board entry (``path``: where it is now, e.g. found by hotplug)."""
    return DRIVERS[cfg.driver](cfg, path)


def make_devices(board, paths: dict | None = None) -> dict[str, Device]:
    return {cfg.name: make_device(cfg, (paths or {}).get(cfg.name)) for cfg in board.devices}
