"""A camera's entry in a board, checked at load like the rest of the board, each error at its
FILE:LINE.

    [[devices]]
    name = "cam"
    driver = "v4l2"                    # or "synthetic-camera" (no /dev/video: CI, laptops)
    usb = { vendor = 0x046d, product = 0x0825 }          # or path = "/dev/video0"
    camera = { width = 640, height = 480, fps = 30, format = "auto" }   # YUYV | MJPG | RGB3 | auto
    stale_ms = 200                     # optional: the frame channel's staleness (default 3 frames + 50 ms)

Its one channel, ``frame`` (sensor, uint8 [height, width, 3], RGB), is made from ``camera``;
a board may still declare it (to set stale_ms), and then it must agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .channels import SENSOR, Channel
from .devices.factory import CAMERAS  # noqa: F401 - the camera drivers, named with the others

FORMATS = ("auto", "YUYV", "MJPG", "RGB3")


@dataclass(frozen=True)
class CameraSpec:
    width: int
    height: int
    fps: float
    format: str = "auto"          # YUYV | MJPG | RGB3 | auto (MJPG, else YUYV, else RGB3)
    buffers: int = 4              # kernel buffers (mmap)


def check_camera(cfg, d: dict, at, need) -> None:
    """Fill ``cfg.camera`` and its frame channel from the board's entry ``d``; ``at(key)``: FILE:LINE."""
    cam = d.get("camera")
    need(isinstance(cam, dict) and set(cam) <= {"width", "height", "fps", "format", "buffers"}
         and {"width", "height", "fps"} <= set(cam), at("camera"),
         f"camera must be {{width, height, fps[, format, buffers]}}, got {cam!r}")
    w, h, fps = cam["width"], cam["height"], cam["fps"]
    need(all(isinstance(v, int) and not isinstance(v, bool) for v in (w, h)) and 16 <= w <= 8192 and 16 <= h <= 8192
         and w % 2 == 0, at("camera"), f"camera width and height must be whole numbers of pixels, 16..8192 "
         f"(width even: YUYV carries pixel pairs), got {w!r}×{h!r}")
    need(isinstance(fps, (int, float)) and 1 <= fps <= 240, at("camera"), f"camera fps must be 1..240, got {fps!r}")
    fmt = cam.get("format", "auto")
    need(fmt in FORMATS, at("camera"), f"camera format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    bufs = cam.get("buffers", 4)
    need(isinstance(bufs, int) and 2 <= bufs <= 32, at("camera"), f"camera buffers must be 2..32, got {bufs!r}")
    cfg.camera = CameraSpec(w, h, float(fps), fmt, bufs)
    stale = d.get("stale_ms", 3000.0 / fps + 50)
    need(isinstance(stale, (int, float)) and stale > 0, at("stale_ms"), f"stale_ms must be positive, got {stale!r}")
    frame = Channel("frame", SENSOR, (h, w, 3), 0.0, 255.0, "", rate_hz=int(fps), dtype=np.dtype(np.uint8))
    declared = [c for c in cfg.channels if c.name == "frame"]
    others = [c.name for c in cfg.channels if c.name != "frame"]
    need(not others, at(None), f"camera {cfg.name!r} has one channel, 'frame'; got also {others}")
    if declared:
        c = declared[0]
        need(c.kind == SENSOR and c.shape == frame.shape and c.dtype == np.uint8 and c.lo <= 0 and c.hi >= 255, at(None),
             f"camera {cfg.name!r}: channel 'frame' must be a uint8 sensor of shape {list(frame.shape)} "
             f"and range [0, 255] (from camera = {{…}}), got {c.kind} {c.dtype}{list(c.shape)} [{c.lo}, {c.hi}]")
        stale = cfg.stale_ms.get("frame", stale) if "stale_ms" not in d else stale
    cfg.channels = [frame]
    cfg.stale_ms = {"frame": float(stale)}
