"""Recording channel traffic, and replaying it as a device.

A recording (.nnrec) is a header line ``NNOSREC1``, a JSON line describing the device and its
channels, then binary records: ``kind u8 | channel u8 | t_host f64 | t_device_us u64 |
count u32 | float32 values`` (kind 1 = sensor reading, 2 = actuator command; t_host in seconds
since the recording started). RecordingDevice wraps any device and records what passes;
ReplayDevice plays a recording back as a device, so a new model can be fed a real run offline.
"""
from __future__ import annotations

import json
import struct
import time

import numpy as np

from .channels import Channel
from .device import Device
from .errors import DeviceError

MAGIC = b"NNOSREC1\n"
REC = struct.Struct("<BBdQI")
KIND_SENSOR, KIND_COMMAND = 1, 2


def _channel_json(c: Channel) -> dict:
    return {"name": c.name, "kind": c.kind, "shape": list(c.shape), "range": [c.lo, c.hi], "units": c.units,
            "safe": c.safe, "rate_hz": c.rate_hz}


def _channel_from(d: dict) -> Channel:
    return Channel(d["name"], d["kind"], tuple(d["shape"]), d["range"][0], d["range"][1], d.get("units", ""),
                   d.get("safe", 0.0), d.get("rate_hz", 0), np.dtype(d.get("dtype", "float32")))


class RecordingDevice(Device):
    """Wraps ``inner``; every new sensor reading and every flushed command goes to ``path``."""

    def __init__(self, inner: Device, path: str, flush_every: int = 256):
        super().__init__(inner.name)
        self.inner, self.path, self.flush_every = inner, path, flush_every
        self._f = None
        self._buf = bytearray()
        self._n = 0

    def open(self) -> None:
        self.inner.open()
        self.channels, self.samples, self.commands = self.inner.channels, self.inner.samples, self.inner.commands
        self._names = list(self.channels)
        self._index = {n: i for i, n in enumerate(self._names)}
        self._seen = {n: s.count for n, s in self.samples.items()}
        self._f = open(self.path, "wb")
        self._f.write(MAGIC + json.dumps({"device": self.name, "started": time.time(),
                                          "channels": [_channel_json(self.channels[n]) for n in self._names]}).encode()
                      + b"\n")
        self._t0 = time.monotonic()
        self.is_open = True

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self._f:
                self._write_out()
                self._f.close()
                self._f = None
            self.is_open = False

    def _append(self, kind: int, name: str, t_dev: int, values: np.ndarray) -> None:
        v = np.asarray(values, "<f4").reshape(-1)
        self._buf += REC.pack(kind, self._index[name], time.monotonic() - self._t0, t_dev, v.size) + v.tobytes()
        self._n += 1
        if self._n % self.flush_every == 0:
            self._write_out()

    def _write_out(self) -> None:
        self._f.write(self._buf)
        self._f.flush()
        self._buf.clear()

    def poll(self, timeout: float = 0.0) -> int:
        n = self.inner.poll(timeout)
        for name, s in self.samples.items():
            if s.count != self._seen[name]:
                self._seen[name] = s.count
                self._append(KIND_SENSOR, name, s.t_device_us, s.values)
        return n

    def write(self, channel, values) -> None:
        self.inner.write(channel, values)

    def flush(self, ref_timestamp_us: int = 0) -> None:
        self.inner.flush(ref_timestamp_us)
        for name, v in self.commands.items():
            self._append(KIND_COMMAND, name, ref_timestamp_us, v)

    def stats(self) -> dict:
        return dict(self.inner.stats(), recorded=self._n)


def read_recording(path: str, device: str | None = None):
    """(header, records) with records as a list of (kind, channel name, t_host, t_device_us, values).
    An .mcap recording (nnos record) gives ``device``'s channels."""
    if path.endswith(".mcap"):
        return read_mcap(path, device)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DeviceError(path, f"cannot read recording: {e.strerror}") from e
    if not data.startswith(MAGIC):
        raise DeviceError(path, f"not an nnos recording (starts {data[:9]!r}, expected {MAGIC!r})")
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC):end])
    names = [c["name"] for c in header["channels"]]
    off, records = end + 1, []
    while off + REC.size <= len(data):
        kind, idx, t_host, t_dev, n = REC.unpack_from(data, off)
        off += REC.size
        if off + 4 * n > len(data) or idx >= len(names):
            break                                    # a recording cut short by a crash: keep what is whole
        records.append((kind, names[idx], t_host, t_dev, np.frombuffer(data, "<f4", n, off).copy()))
        off += 4 * n
    return header, records


class ReplayDevice(Device):
    """A recorded run as a device: sensor readings come back at their recorded times (scaled by
    ``speed``; 0 = as fast as polled, one reading per channel per poll). Commands sent to it
    are kept in ``sent``; the recording's own commands are in ``recorded_commands``."""

    def __init__(self, name: str, path: str, speed: float = 1.0, loop: bool = False):
        super().__init__(name)
        self.path, self.speed, self.loop = path, speed, loop
        header, records = read_recording(path, name)
        self._set_channels([_channel_from(c) for c in header["channels"]])
        self.readings = [r for r in records if r[0] == KIND_SENSOR]
        self.recorded_commands = [(r[3], r[1], r[4]) for r in records if r[0] == KIND_COMMAND]
        self.sent: list[tuple[int, dict]] = []
        self._i = 0

    def open(self) -> None:
        self._t0 = time.monotonic()
        self._i = 0
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    @property
    def finished(self) -> bool:
        return self._i >= len(self.readings)

    def poll(self, timeout: float = 0.0) -> int:
        self._require_open()
        if self.finished and self.loop:
            self.open()
        if self.finished:
            return 0
        n = 0
        if self.speed == 0:
            first_t = self.readings[self._i][2]
            while not self.finished and self.readings[self._i][2] == first_t:
                n += self._release(self.readings[self._i])
            return n
        deadline = time.monotonic() + timeout
        while True:
            now = (time.monotonic() - self._t0) * self.speed
            while not self.finished and self.readings[self._i][2] <= now:
                n += self._release(self.readings[self._i])
            if n or self.finished or time.monotonic() >= deadline:
                return n
            time.sleep(min(0.001, max(0.0, deadline - time.monotonic())))

    def _release(self, rec) -> int:
        _, name, _, t_dev, values = rec
        s = self.samples[name]
        np.copyto(s.values, values.reshape(s.values.shape))
        s.t_device_us, s.t_host = t_dev, time.monotonic()
        s.count += 1
        self._i += 1
        return 1

    def flush(self, ref_timestamp_us: int = 0) -> None:
        self.sent.append((ref_timestamp_us, {k: v.copy() for k, v in self.commands.items()}))


def read_mcap(path: str, device: str | None):
    """An MCAP recording of the live loop (nnos/recorder.py) as (header, records) for one device."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader
    try:
        with open(path, "rb") as f:
            reader = make_reader(f)
            meta = {m.name: m.metadata for m in reader.iter_metadata()}
            layout = [c for c in json.loads(meta["nnos.layout"]["channels"]) if c.get("device") == device]
            if not layout:
                raise DeviceError(path, f"no channels of device {device!r} in this recording")
            kinds = {c["topic"]: (KIND_SENSOR if c["kind"] == "sensor" else KIND_COMMAND, c["channel"]) for c in layout}
            records, t0 = [], None
            for _, ch, msg in reader.iter_messages(topics=list(kinds)):
                t0 = msg.log_time if t0 is None else t0
                kind, name = kinds[ch.topic]
                m = json.loads(msg.data)
                values = jpeg_frame(m["data"]) if "data" in m else np.asarray(m["values"], np.float32)
                records.append((kind, name, (msg.log_time - t0) / 1e9, msg.log_time // 1000, values))
    except (OSError, KeyError, ValueError, McapError) as e:
        raise DeviceError(path, f"not an nnos MCAP recording ({type(e).__name__}: {e})") from e
    channels = [{"name": c["channel"], "kind": c["kind"], "shape": c["shape"], "range": c["range"],
                 "units": c.get("units", ""), "dtype": c.get("dtype", "float32")} for c in layout]
    return {"device": device, "channels": channels}, records


def jpeg_frame(b64: str) -> np.ndarray:
    """A recorded camera frame (foxglove.CompressedImage, JPEG) back to uint8 [H, W, 3]."""
    import base64
    import io

    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)), formats=["JPEG"]).convert("RGB"))
