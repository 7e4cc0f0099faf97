"""The board's ``driver`` names and the device each one builds (the board's TOML is data; this
table is the one place a driver name becomes a class). Each driver's module is imported when a
board uses it: the loop's start on the boot path pays for its own devices only."""
from __future__ import annotations

from ..device import Device


def _serial(cfg, path: str | None) -> Device:
    from .nnos_serial import NnosSerialDevice
    return NnosSerialDevice(cfg.name, path or cfg.path or "", expected=cfg.channels)


def _replay(cfg, path: str | None) -> Device:
    from ..recording import ReplayDevice
    return ReplayDevice(cfg.name, path or cfg.recording, loop=True)


def _servo_bus(cfg, path: str | None) -> Device:
    from .servo_bus import ServoBusDevice
    return ServoBusDevice(cfg.name, path or cfg.path or "", cfg.driver, cfg.servo_models,
                          dict(zip(cfg.joint_names, cfg.servo_ids)), cfg.baudrate, channels=cfg.channels,
                          fast_sync_read=cfg.fast_sync_read)


def _v4l2(cfg, path: str | None) -> Device:
    from ..v4l2 import V4L2Stream, find
    from .camera import CameraDevice

    def opener(spec):              # found again at every open: a camera plugged back in may be another node
        node = path or cfg.path or find(cfg.name, cfg.usb)
        return V4L2Stream(cfg.name, node, spec.width, spec.height, spec.fps, spec.format, spec.buffers)
    return CameraDevice(cfg.name, cfg.camera, cfg.channels, opener)


def _synthetic_camera(cfg, path: str | None) -> Device:
    from ..sim.camera import SyntheticStream, SyntheticWorld
    from .camera import CameraDevice
    world = SyntheticWorld()
    dev = CameraDevice(cfg.name, cfg.camera, cfg.channels,
                       lambda spec: SyntheticStream(cfg.name, world, spec.width, spec.height, spec.fps, spec.format))
    dev.world = world                      # unplug / replug / inject: for tests and demos
    return dev


# The modules each driver's device needs, imported when a board uses it; the supervisor's fork
# server imports a board's ahead of forking its loop (nnos/supervisor/up.py). pyserial is
# imported by the transport when it opens a port: named here, it is not imported by the loop on
# its way to the first tick (30 ms of an emulated boot).
MODULES = {"nnos-serial": ("nnos_hardware.devices.nnos_serial", "serial"), "replay": ("nnos_hardware.recording",),
           "feetech": ("nnos_hardware.devices.servo_bus", "serial"), "dynamixel": ("nnos_hardware.devices.servo_bus", "serial"),
           "v4l2": ("nnos_hardware.devices.camera", "nnos_hardware.v4l2"),
           "synthetic-camera": ("nnos_hardware.devices.camera", "nnos_hardware.sim.camera")}
DRIVERS = {"nnos-serial": _serial, "replay": _replay, "feetech": _servo_bus, "dynamixel": _servo_bus,
           "v4l2": _v4l2, "synthetic-camera": _synthetic_camera}
SERVO_BUSES = ("feetech", "dynamixel")
CAMERAS = ("v4l2", "synthetic-camera")


def modules_for(board) -> set[str]:
    """The driver modules ``board``'s devices need."""
    return {m for cfg in board.devices for m in MODULES[cfg.driver]}


def make_device(cfg, path: str | None = None) -> Device:
    """The device for one board entry (``path``: where it is now, e.g. found by hotplug)."""
    return DRIVERS[cfg.driver](cfg, path)


def make_devices(board, paths: dict | None = None) -> dict[str, Device]:
    return {cfg.name: make_device(cfg, (paths or {}).get(cfg.name)) for cfg in board.devices}
