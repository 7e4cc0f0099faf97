"""A camera's pixel formats → RGB (uint8 [H, W, 3]) into a preallocated frame: the "protocol"
layer between V4L2 buffers (or a synthetic source) and the camera device.

    YUYV  packed 4:2:2 (Y0 U Y1 V), BT.601 limited range (what UVC webcams and vivid send):
          each pixel pair through one 4×6 matrix (a single float32 matmul per frame)
    MJPG  motion JPEG, decoded by Pillow (libjpeg-turbo); a frame without Huffman tables (many
          UVC cameras) is decoded with the standard ones
    RGB3  packed RGB24, rows possibly padded (bytesperline)

A buffer that is not what was negotiated — short, truncated JPEG, another size, another
colour mode — raises FrameError naming what was expected and what came; the camera counts it
and keeps the last good frame.
"""
from __future__ import annotations

import io

import numpy as np

from ..errors import ProtocolError

FORMATS = ("YUYV", "MJPG", "RGB3")


def _yuyv_matrix() -> tuple[np.ndarray, np.ndarray]:
    """BT.601 limited range: (Y0−16, U−128, Y1−16, V−128) → (R0, G0, B0, R1, G1, B1)."""
    y, rv, gu, gv, bu = 255 / 219, 1.596027, -0.391762, -0.812968, 2.017232
    m = np.zeros((4, 6), np.float32)
    m[0, 0:3] = m[2, 3:6] = y
    m[3, 0] = m[3, 3] = rv
    m[1, 1] = m[1, 4] = gu
    m[3, 1] = m[3, 4] = gv
    m[1, 2] = m[1, 5] = bu
    return m, (0.5 - np.array([16, 128, 16, 128], np.float32) @ m).astype(np.float32)


_YUYV_M, _YUYV_BIAS = _yuyv_matrix()


class FrameError(ProtocolError):
    """One frame could not be decoded as negotiated (counted; the stream goes on)."""


class Decoder:
    """``decode(data, out)``: one buffer of the negotiated ``fourcc`` → ``out`` (uint8 [h, w, 3])."""

    def __init__(self, name: str, fourcc: str, width: int, height: int, stride: int = 0):
        if fourcc not in FORMATS:
            raise ProtocolError(name, f"pixel format {fourcc!r} is not one nnos decodes ({', '.join(FORMATS)})")
        self.name, self.fourcc, self.w, self.h = name, fourcc, width, height
        bpp = {"YUYV": 2, "RGB3": 3, "MJPG": 0}[fourcc]
        self.stride = stride or width * bpp
        if bpp and self.stride < width * bpp:
            raise ProtocolError(name, f"bytesperline {stride} is less than {width} pixels × {bpp} bytes")
        self.need = self.stride * height if bpp else 0
        if fourcc == "YUYV":                  # one pixel pair (Y0 U Y1 V) → (R0 G0 B0 R1 G1 B1) per row
            self.pairs = np.empty((height * width // 2, 4), np.float32)
            self.rgb = np.empty((height * width // 2, 6), np.float32)

    def decode(self, data, out: np.ndarray) -> None:
        if self.fourcc == "MJPG":
            self._mjpg(data, out)
            return
        n = len(data)
        if n != self.need:
            raise FrameError(self.name, f"{self.fourcc} frame of {n} bytes; {self.w}×{self.h} needs {self.need}")
        rows = np.frombuffer(data, np.uint8, self.need).reshape(self.h, self.stride)
        if self.fourcc == "RGB3":
            np.copyto(out, rows[:, :self.w * 3].reshape(self.h, self.w, 3))
        else:
            self._yuyv(rows[:, :self.w * 2], out)

    def _yuyv(self, px: np.ndarray, out: np.ndarray) -> None:
        np.copyto(self.pairs.reshape(self.h, self.w // 2, 4), px.reshape(self.h, self.w // 2, 4), casting="unsafe")
        np.matmul(self.pairs, _YUYV_M, out=self.rgb)
        np.add(self.rgb, _YUYV_BIAS, out=self.rgb)                   # (+ 0.5: the cast below rounds)
        np.clip(self.rgb, 0, 255, out=self.rgb)
        np.copyto(out.reshape(-1, 6), self.rgb, casting="unsafe")

    def _mjpg(self, data, out: np.ndarray) -> None:
        from PIL import Image                          # Pillow: libjpeg-turbo
        try:
            im = Image.open(io.BytesIO(data), formats=["JPEG"])
            if im.size != (self.w, self.h):
                raise FrameError(self.name, f"MJPG frame is {im.size[0]}×{im.size[1]}; negotiated {self.w}×{self.h}")
            im.draft("RGB", im.size)
            im.load()
        except FrameError:
            raise
        except (OSError, SyntaxError, ValueError) as e:    # truncated, not a JPEG, bad tables
            raise FrameError(self.name, f"MJPG frame of {len(data)} bytes does not decode: {e}") from e
        if im.mode != "RGB":
            im = im.convert("RGB")
        np.copyto(out, np.asarray(im))


def encode_yuyv(rgb: np.ndarray) -> bytes:
    """RGB uint8 [H, W, 3] → YUYV (BT.601 limited range; each pair's chroma from its mean): what
    a webcam sends, for the synthetic camera and the tests."""
    h, w, _ = rgb.shape
    yuyv = rgb.reshape(-1, 6).astype(np.float32) @ _RGB_M
    yuyv += _RGB_BIAS
    np.clip(yuyv, 0, 255, out=yuyv)
    return yuyv.astype(np.uint8).tobytes()


def _rgb_matrix() -> tuple[np.ndarray, np.ndarray]:
    """(R0, G0, B0, R1, G1, B1) → (Y0, U, Y1, V), the inverse of the decoder's matrix."""
    y, u, v = np.array([65.738, 129.057, 25.064]), np.array([-37.945, -74.494, 112.439]), np.array([112.439, -94.154, -18.285])
    m = np.zeros((6, 4), np.float32)
    m[0:3, 0], m[3:6, 2] = y / 256, y / 256
    m[0:3, 1] = m[3:6, 1] = u / 512
    m[0:3, 3] = m[3:6, 3] = v / 512
    return m, np.array([16.5, 128.5, 16.5, 128.5], np.float32)


_RGB_M, _RGB_BIAS = _rgb_matrix()


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
