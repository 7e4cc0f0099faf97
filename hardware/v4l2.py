"""The camera transport: a V4L2 capture device through linuxpy (kernel ioctls from Python,
no native code of its own: VIDIOC_S_FMT / S_PARM, mmap'd buffers, DQBUF / QBUF, the kernel's
per-buffer timestamp and sequence number).

Chosen over OpenCV's VideoCapture because a control loop needs what OpenCV hides: which
format was negotiated, how many kernel buffers are queued (OpenCV keeps its own and hands
out old frames), each frame's kernel timestamp, and a non-blocking dequeue that drains the
queue to the newest frame. linuxpy is a 1 MB pure-Python wheel (GPL-3.0-or-later, used
unmodified, like gcc in the image); OpenCV's wheel is ~60 MB.

A camera is found by its path or by USB identity (the capture node of the usb_device whose
vendor/product/serial match, through udev — never /dev/videoN, which changes with plug order).
"""
from __future__ import annotations

import os
import select
import time

from .errors import TransportError

PREFERENCE = ("MJPG", "YUYV", "RGB3")      # "auto": the first the camera offers at the size asked


def find(name: str, usb: dict) -> str:
    """The capture node (/dev/videoN) of the USB camera ``usb`` = {vendor, product[, serial]}."""
    import pyudev

    from .hotplug import identity_of
    seen = []
    for dev in pyudev.Context().list_devices(subsystem="video4linux"):
        ident = identity_of(dev)
        if ident.vendor is None or not dev.device_node:
            continue
        seen.append(str(ident))
        same = ident.vendor == usb["vendor"] and ident.product == usb["product"]
        if same and usb.get("serial", ident.serial) == ident.serial and _captures(dev):
            return dev.device_node
    want = f"{usb['vendor']:04x}:{usb['product']:04x}" + (f" serial {usb['serial']}" if "serial" in usb else "")
    raise TransportError(name, f"no USB camera {want} (video devices seen: {', '.join(seen) or 'none'})")


def _captures(dev) -> bool:
    """A UVC camera has two nodes: frames and metadata; only the first captures video. udev's
    v4l_id says which (ID_V4L_CAPABILITIES); without it, the interface's first node (sysfs
    ``index`` 0, what udev rules for webcams match on); without that, the node is asked."""
    caps = dev.properties.get("ID_V4L_CAPABILITIES")
    if caps is not None:
        return ":capture:" in caps
    try:
        return int(dev.attributes.asstring("index")) == 0
    except (KeyError, ValueError):
        pass
    from linuxpy.video.device import Capability, Device
    try:
        with Device(dev.device_node) as d:
            return Capability.VIDEO_CAPTURE in d.info.device_capabilities
    except Exception:          # noqa: BLE001 — not a node linuxpy can read: not ours
        return False


def _fourcc(code: int) -> str:
    return code.to_bytes(4, "little").decode("latin-1")


class V4L2Stream:
    """An open, streaming capture device. ``wait(timeout)`` then ``newest()`` → (data, t_s, seq):
    the newest queued frame (older ones go straight back to the kernel), valid until ``release``."""

    def __init__(self, name: str, path: str, width: int, height: int, fps: float, fourcc: str, buffers: int = 4):
        from linuxpy.video.device import BufferType, Device, Memory, VideoCapture
        self.name, self.path, self._type, self._mem = name, path, BufferType.VIDEO_CAPTURE, Memory.MMAP
        try:
            self.dev = Device(path)
            self.dev.open()
        except OSError as e:
            raise TransportError(name, f"cannot open camera {path}: {e.strerror or e}") from e
        try:
            self.fourcc = self._negotiate(width, height, fourcc)
            pix = self._raw_format().fmt.pix
            self.width, self.height, self.stride = pix.width, pix.height, pix.bytesperline
            if (self.width, self.height) != (width, height):
                raise TransportError(name, f"{path} offers {self.width}×{self.height} {self.fourcc}, not the "
                                     f"{width}×{height} the board asks for")
            try:
                self.dev.set_fps(self._type, fps)
            except OSError:
                pass                               # some cameras have one rate; the stream says which
            self.fps = float(self.dev.get_fps(self._type))
            self.cap = VideoCapture(self.dev, size=buffers)
            self.cap.open()                        # REQBUFS, mmap, QBUF all, STREAMON
            self.maps = self.cap.buffer.buffers
        except TransportError:
            self.close()
            raise
        except OSError as e:
            self.close()
            raise TransportError(name, f"camera {path} refused the stream setup: {e.strerror or e}") from e
        except Exception as e:     # noqa: BLE001 — linuxpy's own failures (a format it has no name for…)
            self.close()           # are this camera's failure, never the loop's: said as such
            raise TransportError(name, f"camera {path}: V4L2 setup failed in linuxpy ({type(e).__name__}: {e})") from e
        self.held = None

    def _negotiate(self, width: int, height: int, fourcc: str) -> str:
        offered = self._offered()
        order = PREFERENCE if fourcc == "auto" else (fourcc,)
        for want in order:
            if want in offered:
                self.dev.set_format(self._type, width, height, want)
                got = _fourcc(self._raw_format().fmt.pix.pixelformat)
                if got != want:
                    raise TransportError(self.name, f"{self.path} was asked for {want} and answered {got}")
                return want
        raise TransportError(self.name, f"{self.path} offers {', '.join(offered) or 'no formats'}; "
                             f"the board asks for {fourcc} ({' or '.join(order)})")

    def _offered(self) -> list[str]:
        """The capture formats as fourcc strings (VIDIOC_ENUM_FMT; raw, as linuxpy's enum does
        not know every format a driver offers)."""
        from linuxpy.video import raw
        from linuxpy.video.device import IOC, iter_read
        desc = raw.v4l2_fmtdesc()
        desc.type = self._type
        return [_fourcc(d.pixelformat) for d in iter_read(self.dev, IOC.ENUM_FMT, desc)]

    def _raw_format(self):
        from linuxpy.video.device import get_raw_format
        return get_raw_format(self.dev, self._type)

    def fileno(self) -> int:
        return self.dev.fileno()

    def wait(self, timeout: float) -> bool:
        try:
            r, _, x = select.select([self.dev], [], [self.dev], timeout)
        except (OSError, ValueError) as e:
            raise TransportError(self.name, f"camera {self.path} is gone ({e})") from e
        return bool(r or x)

    def newest(self):
        """(memoryview of the frame, kernel timestamp in s (CLOCK_MONOTONIC), sequence) or None."""
        from linuxpy.video.device import dequeue_buffer
        got = None
        while True:
            try:
                b = dequeue_buffer(self.dev, self._type, self._mem)
            except BlockingIOError:                   # EAGAIN: the queue is drained
                break
            except OSError as e:
                if got is not None:
                    self._requeue(got)
                raise TransportError(self.name, f"camera {self.path} stopped: {os.strerror(e.errno or 0)}") from e
            if got is not None:
                self._requeue(got)                    # an older frame: straight back to the kernel
            got = b
        if got is None:
            return None
        self.held, self.view = got, memoryview(self.maps[got.index])[:got.bytesused]
        t = got.timestamp.secs + got.timestamp.usecs * 1e-6 if got.timestamp.secs else time.monotonic()
        return self.view, t, got.sequence

    def release(self) -> None:
        """The frame from ``newest`` back to the kernel (its memoryview ends here)."""
        if self.held is not None:
            b, self.held = self.held, None
            self.view.release()
            self._requeue(b)

    def _requeue(self, b) -> None:
        from linuxpy.video.device import enqueue_buffer_raw
        try:
            enqueue_buffer_raw(self.dev, b)
        except OSError as e:
            raise TransportError(self.name, f"camera {self.path} stopped: {os.strerror(e.errno or 0)}") from e

    def close(self) -> None:
        if getattr(self, "held", None) is not None:
            self.view.release()
            self.held = None
        cap = getattr(self, "cap", None)
        try:
            if cap is not None:
                cap.close()
        except (OSError, ValueError):
            pass
        try:
            self.dev.close()
        except OSError:
            pass
