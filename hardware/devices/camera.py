"""A camera as a device: one sensor channel ``frame``, uint8 [H, W, 3] RGB.

A capture thread (SCHED_OTHER, inside the loop's process) waits on the stream, takes the
newest frame the kernel has (older ones go back unread: the loop wants the latest, not a
queue), decodes it into a spare buffer and publishes it with its kernel timestamp — a triple
buffer, so neither side waits for the other. ``poll`` (the loop, every tick) copies a newly
published frame into the channel's sample; its age is the kernel timestamp's, so a camera
that stops is stale after the channel's ``stale_ms``. A frame that does not decode is counted
and skipped; a stream that fails (unplugged) makes ``poll`` raise, the loop marks the device
lost, and the reconnect thread opens it again — by USB identity, wherever it comes back.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ..camera_config import CameraSpec
from ..channels import Channel
from ..device import Device
from ..errors import DeviceError, HardwareError, TransportError
from ..protocol.pixels import Decoder, FrameError


class CameraDevice(Device):
    reconnectable = True
    holds_gil = True              # its capture thread decodes in numpy at frame rate (runtime/realtime.gil_for)

    def __init__(self, name: str, spec: CameraSpec, channels: list[Channel], opener):
        """``opener(spec)``: a new stream (hardware/v4l2.py's V4L2Stream, or the synthetic one)."""
        super().__init__(name)
        self._set_channels(channels)
        frame = self.channels.get("frame")
        want = (spec.height, spec.width, 3)
        if frame is None or frame.shape != want or frame.dtype != np.uint8:
            raise DeviceError(name, f"a camera has one sensor channel 'frame', uint8 {list(want)}; "
                              f"got {[(c.name, list(c.shape), str(c.dtype)) for c in channels]}")
        self.spec, self.opener = spec, opener
        self.bufs = [np.zeros(want, np.uint8) for _ in range(3)]      # writing, ready, reading
        self.t = [0.0, 0.0, 0.0]                                        # … and their kernel timestamps
        self.fresh = False
        self.lock = threading.Lock()
        self.stream = self.thread = None
        self.failure: HardwareError | None = None
        self.counts = {"frames": 0, "bad_frames": 0, "dropped_frames": 0, "opens": 0}
        self.last_bad = ""
        self.negotiated = ""

    def open(self) -> None:
        if self.is_open:
            return
        stream = self.opener(self.spec)
        try:
            self.decoder = Decoder(self.name, stream.fourcc, stream.width, stream.height, stream.stride)
        except HardwareError:
            stream.close()
            raise
        self.stream, self.failure, self.fresh = stream, None, False
        self.negotiated = f"{stream.fourcc} {stream.width}x{stream.height} @ {stream.fps:g} fps"
        self.counts["opens"] += 1
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._capture, name=f"camera-{self.name}", daemon=True)
        self.thread.start()
        self.is_open = True

    def close(self) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join(timeout=2.0)
            self.thread = None
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self.is_open = False

    # --- the capture thread ----------------------------------------------------------------------
    def _capture(self) -> None:
        try:                           # below the loop (SCHED_FIFO), and off its CPU where there is another
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            others = set(range(os.cpu_count() or 1)) - os.sched_getaffinity(0)
            if others:
                os.sched_setaffinity(0, others)
        except (OSError, AttributeError):
            pass
        last_seq = None
        while not self.stop.is_set():
            try:
                got = self.stream.newest() if self.stream.wait(0.1) else None
                if got is None:
                    continue
                data, t, seq = got
                if last_seq is not None and seq > last_seq + 1:
                    self.counts["dropped_frames"] += seq - last_seq - 1      # never dequeued: newer ones came
                last_seq = seq
                try:
                    self.decoder.decode(data, self.bufs[0])
                except FrameError as e:
                    self.counts["bad_frames"] += 1
                    self.last_bad = str(e)
                    continue
                finally:
                    self.stream.release()
            except HardwareError as e:
                self.failure = e
                return
            self.counts["frames"] += 1
            with self.lock:                      # publish: the written buffer becomes the ready one
                self.bufs[0], self.bufs[1] = self.bufs[1], self.bufs[0]
                self.t[0], self.t[1] = self.t[1], t
                self.fresh = True

    # --- the loop's side ---------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        self._require_open()
        if self.failure is not None:
            raise TransportError(self.name, f"camera stream failed: {self.failure}") from self.failure
        if not self.fresh:
            return 0
        with self.lock:
            self.bufs[1], self.bufs[2] = self.bufs[2], self.bufs[1]
            self.t[1], self.t[2] = self.t[2], self.t[1]
            self.fresh = False
        s = self.samples["frame"]
        np.copyto(s.values, self.bufs[2])        # uint8 in [0, 255]: never out of the channel's range
        s.t_device_us = int(self.t[2] * 1e6)
        s.t_host = self.t[2]                     # kernel timestamp (CLOCK_MONOTONIC): stale counts from capture
        s.count += 1
        return 1

    def flush(self, ref_timestamp_us: int = 0) -> None:
        self._require_open()

    def stats(self) -> dict:
        return dict(self.counts, format=self.negotiated, last_bad_frame=self.last_bad)

    def stale_detail(self, channel: str) -> str:
        if self.counts["bad_frames"] and self.last_bad:
            return f"{self.counts['bad_frames']} bad frames, the last: {self.last_bad}"
        return f"{self.counts['frames']} frames since open ({self.negotiated})"
