"""The cart-pole firmware on the device side of a pseudo-terminal, in a thread: a device a
test's driver talks to over real serial I/O."""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from nnos_hardware.protocol import frames as fr
from nnos_hardware.sim import cartpole
from nnos_hardware.sim.__main__ import open_pty
from nnos_hardware.sim.firmware import Firmware
from nnos_hardware.transport import FdTransport


class FirmwareThread:
    """A device on the master side of a pty: answers the handshake, streams sensors at
    ``rate_hz`` (when ``streaming``), applies commands."""

    def __init__(self, channels=None, rate_hz=200.0, version=fr.PROTOCOL_VERSION, device_id="test-dev-1"):
        self.master, self.slave, self.port = open_pty()
        self.fw = Firmware(FdTransport(self.master, "fw"), device_id, channels or cartpole.channels(), version=version)
        self.rate_hz, self.streaming = rate_hz, True
        self.values = {c.id: np.arange(c.size, dtype=np.float32).reshape(c.shape) * 0.01
                       for c in self.fw.channels if c.kind == fr.SENSOR}
        self.raw: list[bytes] = []            # bytes to inject as-is (garbage, floods)
        self.sent = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        nxt = time.monotonic()
        while not self._stop.is_set():
            try:
                self.fw.service(max(0.0, min(0.005, nxt - time.monotonic())))
                while self.raw:
                    self.fw.link.t.write(self.raw.pop(0))
                if time.monotonic() >= nxt:
                    nxt += 1.0 / self.rate_hz
                    if self.fw.connected and self.streaming:
                        self.fw.send_sensors(self.values)
                        self.sent += 1
            except Exception:
                if self._stop.is_set():
                    return
                time.sleep(0.01)

    def stop(self):
        self._stop.set()
        self.thread.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def samples_after(dev, n: int, seconds: float = 2.0, channel: str = "cart") -> int:
    """How many new readings of ``channel`` arrived while polling ``dev`` for up to ``n`` of them
    (at most ``scaled(seconds)``): the device is polled, never slept on."""
    from tests.support.timing import scaled
    deadline = time.monotonic() + scaled(seconds)
    start = dev.latest(channel).count
    while dev.latest(channel).count < start + n and time.monotonic() < deadline:
        dev.poll(0.05)
    return dev.latest(channel).count - start
