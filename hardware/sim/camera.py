"""A synthetic camera: the stream interface of hardware/v4l2.py (wait, newest, release, close)
without a kernel — frames rendered at the configured rate and encoded in the negotiated format
(YUYV, MJPG, RGB3), so everything after the transport (decoding, the latest-frame handoff,
staleness, reconnects, pre-processing) runs as it does with a real camera. For CI machines
without /dev/video* and for laptops.

The scene: a red disk moving over a shaded background along a slow Lissajous path
(``target(t)``: its centre, x and y in [0, 1]); the vision example (models/vision) is trained
to follow it. A ``SyntheticWorld`` outlives the streams opened on it, so a test can unplug
the camera (every open fails until ``replug``), stop it mid-stream, or make it send one bad
frame: truncated, another size, another format.
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np

from ..errors import TransportError
from ..protocol.pixels import FORMATS, encode_jpeg, encode_yuyv

DISK = (220, 40, 40)
FAULTS = ("truncated", "size", "format")


def target(t: float) -> tuple[float, float]:
    """Where the disk's centre is at time ``t`` (s): x, y in [0.2, 0.8]."""
    return 0.5 + 0.3 * math.sin(2 * math.pi * 0.21 * t), 0.5 + 0.3 * math.sin(2 * math.pi * 0.13 * t + 1.0)


class Scene:
    """Renders the scene at h×w: the disk's radius is 1/10 of the shorter side."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.yy, self.xx = yy, xx
        self.background = np.stack([40 + 60 * xx / w, 60 + 50 * yy / h, 90 + 0 * xx], -1).astype(np.uint8)
        self.r2 = (min(h, w) / 10.0) ** 2

    def render(self, x: float, y: float, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = self.background.copy()
        else:
            np.copyto(out, self.background)
        cy, cx = y * (self.h - 1), x * (self.w - 1)
        r = math.sqrt(self.r2)
        y0, y1 = max(0, int(cy - r)), min(self.h, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r)), min(self.w, int(cx + r) + 2)
        inside = (self.yy[y0:y1, x0:x1] - cy) ** 2 + (self.xx[y0:y1, x0:x1] - cx) ** 2 <= self.r2
        out[y0:y1, x0:x1][inside] = DISK
        return out


class SyntheticWorld:
    """What outlives a stream: plugged in or not, stopped or not, one-shot bad frames queued."""

    def __init__(self):
        self.plugged, self.stopped = True, False
        self.faults: list[str] = []
        self.opens = 0
        self.lock = threading.Lock()

    def unplug(self) -> None:
        self.plugged = False

    def replug(self) -> None:
        self.plugged = True

    def inject(self, fault: str) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        with self.lock:
            self.faults.append(fault)

    def take_fault(self) -> str | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None


class SyntheticStream:
    """One open synthetic camera; frames at ``fps`` on its own clock, timestamps on CLOCK_MONOTONIC."""

    def __init__(self, name: str, world: SyntheticWorld, width: int, height: int, fps: float, fourcc: str,
                 clock=time.monotonic):
        if not world.plugged:
            raise TransportError(name, "synthetic camera is unplugged")
        fourcc = "YUYV" if fourcc == "auto" else fourcc
        if fourcc not in FORMATS:
            raise TransportError(name, f"synthetic camera offers {', '.join(FORMATS)}; the board asks for {fourcc}")
        world.opens += 1
        self.name, self.world, self.fourcc, self.fps, self.clock = name, world, fourcc, float(fps), clock
        self.width, self.height = width, height
        self.stride = width * {"YUYV": 2, "RGB3": 3, "MJPG": 0}[fourcc]
        self.scene = Scene(height, width)
        self.rgb = np.empty((height, width, 3), np.uint8)
        self.t0 = clock()
        self.seq = -1
        self.closed = False

    def _due(self) -> int:
        return int((self.clock() - self.t0) * self.fps)

    def wait(self, timeout: float) -> bool:
        if not self.world.plugged or self.closed:
            raise TransportError(self.name, "synthetic camera was unplugged")
        if self.world.stopped:
            time.sleep(timeout)
            return False
        wait = (self.seq + 1) / self.fps - (self.clock() - self.t0)
        if wait > timeout:
            time.sleep(max(0.0, timeout))
            return False
        time.sleep(max(0.0, wait))
        return True

    def newest(self):
        n = self._due()
        if n <= self.seq or self.world.stopped:
            return None
        self.seq = n
        t = self.t0 + n / self.fps
        self.scene.render(*target(t), out=self.rgb)
        return self._encode(self.world.take_fault()), t, n

    def _encode(self, fault: str | None) -> bytes:
        rgb = self.rgb[: self.height // 2] if fault == "size" else self.rgb
        if fault == "format":                       # bytes of another format than the one negotiated
            return encode_yuyv(rgb) if self.fourcc == "MJPG" else encode_jpeg(rgb)
        data = {"YUYV": encode_yuyv, "MJPG": encode_jpeg, "RGB3": lambda a: a.tobytes()}[self.fourcc](rgb)
        return data[: len(data) // 2] if fault == "truncated" else data

    def release(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
