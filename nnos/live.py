"""The running loop as messages, read from its shared-memory rings in another process (never
from the loop): what a recording (MCAP), the Foxglove server and the dashboard's live stream all
publish. Each topic has a JSON Schema (the form MCAP and Foxglove declare channels with):

- ``/<device>/<channel>`` (nnos.Channel): {tick, values, names, units} every tick;
- ``/loop`` (nnos.Loop): {tick, mode, lateness_us, compute_us, inputs, outputs};
- ``/model`` and ``/failsafe`` (nnos.Text) when they change;
- a camera's ``/<device>/<channel>`` (foxglove.CompressedImage, JPEG compressed here, from the
  loop's frame ring, so Foxglove shows it as video).
"""
from __future__ import annotations

import base64
import glob
import io
import json
import os

from .frames import FrameReader
from .telemetry import MODES, ChannelReader, TelemetryReader

JPEG_QUALITY = 90
NUMBERS = {"type": "array", "items": {"type": "number"}}
STRINGS = {"type": "array", "items": {"type": "string"}}
COMPRESSED_IMAGE = {      # foxglove.CompressedImage, in its JSON form (data base64)
    "timestamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}},
    "frame_id": {"type": "string"}, "data": {"type": "string", "contentEncoding": "base64"},
    "format": {"type": "string"}, "tick": {"type": "integer"}}   # tick: nnos's, the first tick that read it
SCHEMAS = {
    "nnos.Channel": {"tick": {"type": "integer"}, "values": NUMBERS, "names": STRINGS, "units": {"type": "string"}},
    "nnos.Loop": {"tick": {"type": "integer"}, "mode": {"type": "string"}, "lateness_us": {"type": "number"},
                  "compute_us": {"type": "number"}, "inputs": NUMBERS, "outputs": NUMBERS},
    "nnos.Text": {"text": {"type": "string"}},
    "foxglove.CompressedImage": COMPRESSED_IMAGE,
}


def schema(name: str) -> bytes:
    """The JSON Schema of one of SCHEMAS, as bytes."""
    return json.dumps({"title": name, "type": "object", "properties": SCHEMAS[name]}).encode()


class Feed:
    """``topics``: [(topic, schema name)]; ``poll()`` → [(topic, t_ns, message)] of everything the
    rings got since the last poll (``latest=True``: only each topic's newest — a live view's
    rate, not the loop's)."""

    def __init__(self, run_dir: str, topics: list[str] | None = None):
        self.channels = ChannelReader(os.path.join(run_dir, "channels"))
        frames = [FrameReader(p) for p in sorted(glob.glob(os.path.join(run_dir, "frames-*")))]
        have = [t["topic"] for t in self.channels.layout] + [f.meta["topic"] for f in frames]
        unknown = sorted(set(topics or ()) - set(have))
        if unknown:                                      # before anything is opened or written
            self.channels.close()
            for f in frames:
                f.close()
            raise ValueError(f"no such channel {unknown}; the board's: {have}")
        self.layout = [t for t in self.channels.layout if topics is None or t["topic"] in topics]
        self.frames = [f for f in frames if topics is None or f.meta["topic"] in topics]
        for f in frames:
            if f not in self.frames:
                f.close()
        self.tel = TelemetryReader(os.path.join(run_dir, "telemetry"))
        # from the frame the loop reads now: a replay needs the image its first recorded ticks saw
        self.frame_after = [f.last() - 1 if f.last() is not None else -1 for f in self.frames]
        last = self.channels.last_tick()
        self.after = -1 if last is None else last       # from now on
        self.model = self.reason = None
        self.polled = 0                                  # tick records the last poll read

    @property
    def topics(self) -> list[tuple[str, str]]:
        return ([(t["topic"], "nnos.Channel") for t in self.layout] + [("/loop", "nnos.Loop"), ("/model", "nnos.Text"),
                ("/failsafe", "nnos.Text")] + [(f.meta["topic"], "foxglove.CompressedImage") for f in self.frames])

    @property
    def cameras(self) -> list[dict]:
        return [dict(f.meta, kind="sensor", range=[0, 255], units="", dtype="uint8", image="jpeg") for f in self.frames]

    def poll(self, latest: bool = False, every: int = 1) -> list[tuple[str, int, dict]]:
        """``every``: only ticks that are multiples of it (a live view of a fast loop: the work of
        making messages is done for those only)."""
        recs = self.channels.since(self.after)
        self.polled = len(recs)
        if not len(recs):
            return []
        self.after = int(recs[-1]["tick"])
        if latest:
            recs = recs[-1:]
        elif every > 1:
            recs = recs[recs["tick"] % every == 0]
            if not len(recs):
                return []
        span = self.after - int(recs[0]["tick"]) + 2           # the tick records of these ticks, no more
        loop = {int(r["tick"]): r for r in self.tel.records(min(span + 8, self.channels.capacity))}
        out = []
        for r in recs:
            tick, t = int(r["tick"]), int(r["t_ns"])
            for lay in self.layout:
                values = r["values"][lay["offset"]:lay["offset"] + lay["size"]].tolist()
                out.append((lay["topic"], t, {"tick": tick, "values": values, "names": lay["names"], "units": lay["units"]}))
            x = loop.get(tick)
            if x is not None:
                out.append(("/loop", t, {"tick": tick, "mode": MODES.get(int(x["mode"]), "?"),
                                         "lateness_us": int(x["lateness_ns"]) / 1000,
                                         "compute_us": int(x["compute_ns"]) / 1000,
                                         "inputs": x["inputs"][:int(x["n_in"])].tolist(),
                                         "outputs": x["outputs"][:int(x["n_out"])].tolist()}))
        return out + self._texts(int(recs[-1]["t_ns"]))

    def _texts(self, t: int) -> list[tuple[str, int, dict]]:
        c, out = self.tel.counters(), []
        if c["active"] != self.model:
            self.model = c["active"]
            out.append(("/model", t, {"text": self.model}))
        if c["failsafe_reason"] != self.reason:
            self.reason = c["failsafe_reason"]
            out.append(("/failsafe", t, {"text": self.reason}))
        return out

    def frames_jpeg(self, latest: bool = False) -> list[tuple[str, int, dict]]:
        """New camera frames as JPEG (this process's CPU, never the loop's)."""
        from PIL import Image
        out = []
        for i, ring in enumerate(self.frames):
            new = ring.since(self.frame_after[i])
            for number, tick, t, frame in new[-1:] if latest else new:
                buf = io.BytesIO()
                Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
                out.append((ring.meta["topic"], t, {"timestamp": {"sec": t // 1_000_000_000, "nsec": t % 1_000_000_000},
                                                    "frame_id": ring.meta["topic"], "format": "jpeg", "tick": tick,
                                                    "data": base64.b64encode(buf.getvalue()).decode()}))
            if new:
                self.frame_after[i] = new[-1][0]
        return out

    @property
    def frames_missed(self) -> int:
        return sum(f.missed for f in self.frames)

    def close(self) -> None:
        self.channels.close()
        for ring in self.frames:
            ring.close()
        self.tel.close()
