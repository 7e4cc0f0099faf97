"""Hotplug by identity: USB serial devices are recognised by vendor/product id and serial
number — never by /dev/ttyUSBn, which changes with plug order — bound (opened, handshaken) on
add, marked stale on remove, and bound again when they come back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from .board import Board, DeviceConfig
from .device import Device
from .errors import HardwareError


@dataclass(frozen=True)
class Identity:
    vendor: Optional[int]
    product: Optional[int]
    serial: Optional[str]
    devnode: str
    syspath: str

    def __str__(self):
        v = f"{self.vendor:04x}:{self.product:04x}" if self.vendor is not None else "?:?"
        return f"{v} serial {self.serial or '-'} at {self.devnode}"


def identity_of(udev_device) -> Identity:
    """Read the USB identity of a tty from its usb_device ancestor (sysfs attributes), falling
    back to the udev database's ID_* properties."""
    usb = udev_device.find_parent("usb", "usb_device")
    vendor = product = serial = None
    if usb is not None:
        attrs = usb.attributes
        try:
            vendor = int(attrs.asstring("idVendor"), 16)
            product = int(attrs.asstring("idProduct"), 16)
        except (KeyError, ValueError):
            pass
        try:
            serial = attrs.asstring("serial")
        except KeyError:
            pass
    props = udev_device.properties
    if vendor is None and "ID_VENDOR_ID" in props:
        vendor, product = int(props["ID_VENDOR_ID"], 16), int(props.get("ID_MODEL_ID", "0"), 16)
    if serial is None:
        serial = props.get("ID_SERIAL_SHORT")
    return Identity(vendor, product, serial, udev_device.device_node or "", udev_device.sys_path)


def matches(cfg: DeviceConfig, ident: Identity) -> bool:
    u = cfg.usb
    if not u:
        return bool(cfg.path) and cfg.path == ident.devnode
    if ident.vendor != u["vendor"] or ident.product != u["product"]:
        return False
    return "serial" not in u or u["serial"] == ident.serial


@dataclass
class Event:
    action: str              # "add" | "remove"
    device: str              # the board's device name
    identity: Identity


class HotplugWatcher:
    """Maps udev tty events to the board's configured devices."""

    def __init__(self, board: Board, context=None):
        import pyudev
        self.board = board
        self.context = context or pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(self.context)
        self.monitor.filter_by("tty")
        self.monitor.start()
        self.unmatched: list[Identity] = []
        self.bound: dict[str, str] = {}           # sys_path -> the board's device name, while present

    def _configured(self, ident: Identity) -> Optional[DeviceConfig]:
        for cfg in self.board.devices:
            if cfg.driver == "nnos-serial" and (cfg.usb or cfg.path) and matches(cfg, ident):
                return cfg
        return None

    def scan(self) -> list[Event]:
        """Devices present now, as add events (at start-up)."""
        events = []
        for dev in self.context.list_devices(subsystem="tty"):
            ident = identity_of(dev)
            cfg = self._configured(ident) if ident.devnode else None
            if cfg is not None:
                self.bound[dev.sys_path] = cfg.name
                events.append(Event("add", cfg.name, ident))
        return events

    def poll(self, timeout: float) -> list[Event]:
        events, deadline = [], time.monotonic() + timeout
        while True:
            dev = self.monitor.poll(timeout=max(0.0, deadline - time.monotonic()))
            if dev is None:
                return events
            if dev.action not in ("add", "remove"):
                continue
            ident = identity_of(dev)
            cfg = self._configured(ident)
            if dev.action == "remove":
                # a removed device's sysfs (and often its udev properties) are gone: it is known
                # by where it was bound
                name = self.bound.pop(dev.sys_path, None) or (cfg.name if cfg else None)
                if name is not None:
                    events.append(Event("remove", name, ident))
                continue
            if cfg is None:
                self.unmatched.append(ident)
                continue
            self.bound[dev.sys_path] = cfg.name
            events.append(Event(dev.action, cfg.name, ident))
            timeout = 0.0                                   # drain what is queued, then return
            deadline = time.monotonic()


def present(board, context=None) -> dict[str, str]:
    """Where each of the board's USB-identified devices is now ({name: /dev node}): what a
    process that starts after the device was plugged in (a restarted loop, nnos calibrate) uses,
    as no add event will come for it."""
    return {e.device: e.identity.devnode for e in HotplugWatcher(board, context).scan()}


class HotplugManager:
    """Keeps the board's serial devices bound: open + handshake on add, stale on remove.

    Each configured device is one Device object for the whole run (its sample arrays stay
    where the loop's bindings point); hotplug only re-opens it on whatever node it appears."""

    def __init__(self, board: Board, factory: Callable[[DeviceConfig], Device], log=print):
        self.board, self.log = board, log
        self.devices = {c.name: factory(c) for c in board.devices if c.driver == "nnos-serial" and (c.usb or c.path)}
        self.where: dict[str, str] = {}
        self.binds = self.removals = self.failures = 0

    def handle(self, event: Event) -> None:
        dev = self.devices.get(event.device)
        if dev is None:
            return
        if event.action == "add":
            if dev.is_open and self.where.get(event.device) == event.identity.devnode:
                return                                      # a repeated add for what is bound
            self._unbind(event.device)
            dev.port = event.identity.devnode
            try:
                dev.open()
            except HardwareError as e:
                self.failures += 1
                self.log(f"hotplug: {event.device} ({event.identity}) did not bind: {e}")
                return
            self.where[event.device] = event.identity.devnode
            self.binds += 1
            self.log(f"hotplug: bound {event.device} to {event.identity}")
        elif dev.is_open and self.where.get(event.device) == event.identity.devnode:
            self._unbind(event.device)
            self.removals += 1
            self.log(f"hotplug: {event.device} removed ({event.identity}); its channels are stale")

    def _unbind(self, name: str) -> None:
        dev = self.devices[name]
        self.where.pop(name, None)
        for s in dev.samples.values():
            s.t_host = 0.0                                  # stale at once, not after stale_ms
        if dev.is_open:
            try:
                dev.close()
            except HardwareError:
                pass
