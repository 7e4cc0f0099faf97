"""Recording a live session as MCAP (the robotics log format Foxglove and ROS 2 tools open), in
a process of its own: it reads the loop's shared-memory rings (RUN/channels: every channel
each tick; RUN/telemetry: mode, timing, the model's first input and output, the active model,
failsafe reasons) and never touches the loop.

Topics, JSON messages with a JSON Schema each: ``/<device>/<channel>`` ({tick, values, names,
units}), ``/loop`` ({tick, mode, lateness_us, compute_us, inputs, outputs}), ``/model`` and
``/failsafe`` when they change; a camera's ``/<device>/frame`` as foxglove.CompressedImage
(JPEG, compressed here by Pillow from the loop's frame ring, RUN/frames-*, so Foxglove shows it
as video). Chunks of 64 KiB, each written and flushed as it fills: after a
power cut mid-write, the file up to its last complete chunk is readable.
"""
from __future__ import annotations

import base64
import glob
import io
import json
import os
import time

from .frames import FrameReader
from .telemetry import MODES, ChannelReader, TelemetryReader

CHUNK_BYTES = 64 * 1024
JPEG_QUALITY = 90
COMPRESSED_IMAGE = {      # foxglove.CompressedImage, in its JSON form (data base64)
    "timestamp": {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}},
    "frame_id": {"type": "string"}, "data": {"type": "string", "contentEncoding": "base64"},
    "format": {"type": "string"}, "tick": {"type": "integer"}}   # tick: nnos's, the first tick that read it


def _schema(title: str, props: dict) -> bytes:
    return json.dumps({"title": title, "type": "object", "properties": props}).encode()


NUMBERS = {"type": "array", "items": {"type": "number"}}
STRINGS = {"type": "array", "items": {"type": "string"}}


class Recorder:
    def __init__(self, run_dir: str, out_path: str, topics: list[str] | None = None, board_path: str | None = None):
        from mcap.writer import CompressionType, Writer
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
        self.f = open(out_path, "wb")
        self.w = Writer(self.f, chunk_size=CHUNK_BYTES, compression=CompressionType.NONE)
        self.w.start(profile="", library="nnos")
        ch_schema = self.w.register_schema("nnos.Channel", "jsonschema", _schema(
            "nnos.Channel", {"tick": {"type": "integer"}, "values": NUMBERS, "names": STRINGS, "units": {"type": "string"}}))
        self.ids = {t["topic"]: self.w.register_channel(t["topic"], "json", ch_schema) for t in self.layout}
        loop_schema = self.w.register_schema("nnos.Loop", "jsonschema", _schema(
            "nnos.Loop", {"tick": {"type": "integer"}, "mode": {"type": "string"}, "lateness_us": {"type": "number"},
                          "compute_us": {"type": "number"}, "inputs": NUMBERS, "outputs": NUMBERS}))
        text = self.w.register_schema("nnos.Text", "jsonschema", _schema("nnos.Text", {"text": {"type": "string"}}))
        image = self.w.register_schema("foxglove.CompressedImage", "jsonschema",
                                       _schema("foxglove.CompressedImage", COMPRESSED_IMAGE))
        self.frame_ids = [self.w.register_channel(f.meta["topic"], "json", image) for f in self.frames]
        # from the frame the loop reads now: a replay needs the image its first recorded ticks saw
        self.frame_after = [f.last() - 1 if f.last() is not None else -1 for f in self.frames]
        cams = [dict(f.meta, kind="sensor", range=[0, 255], units="", dtype="uint8", image="jpeg") for f in self.frames]
        self.w.add_metadata("nnos.layout", {"channels": json.dumps(self.layout + cams)})
        if board_path:                                  # what `nnos replay` binds a candidate model with
            with open(board_path) as f:
                self.w.add_metadata("nnos.board", {"path": board_path, "toml": f.read()})
        self.loop_id = self.w.register_channel("/loop", "json", loop_schema)
        self.model_id = self.w.register_channel("/model", "json", text)
        self.failsafe_id = self.w.register_channel("/failsafe", "json", text)
        last = self.channels.last_tick()
        self.after = -1 if last is None else last       # from now on
        self.model = self.reason = None
        self.messages = 0

    def poll(self) -> int:
        """Everything the rings got since the last poll into the file; the ticks written."""
        recs = self.channels.since(self.after)
        if not len(recs):
            return 0
        loop = {int(r["tick"]): r for r in self.tel.records(self.channels.capacity)}
        for r in recs:
            tick, t = int(r["tick"]), int(r["t_ns"])
            for lay in self.layout:
                values = r["values"][lay["offset"]:lay["offset"] + lay["size"]].tolist()
                self._put(self.ids[lay["topic"]], t, {"tick": tick, "values": values, "names": lay["names"],
                                                      "units": lay["units"]})
            x = loop.get(tick)
            if x is not None:
                self._put(self.loop_id, t, {"tick": tick, "mode": MODES.get(int(x["mode"]), "?"),
                                            "lateness_us": int(x["lateness_ns"]) / 1000,
                                            "compute_us": int(x["compute_ns"]) / 1000,
                                            "inputs": x["inputs"][:int(x["n_in"])].tolist(),
                                            "outputs": x["outputs"][:int(x["n_out"])].tolist()})
        self._texts(int(recs[-1]["t_ns"]))
        self.after = int(recs[-1]["tick"])
        self._frames()
        return len(recs)

    def _frames(self) -> None:
        """New camera frames as JPEG (this process's CPU, never the loop's)."""
        from PIL import Image
        for i, ring in enumerate(self.frames):
            for number, tick, t, frame in ring.since(self.frame_after[i]):
                buf = io.BytesIO()
                Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
                self._put(self.frame_ids[i], t, {"timestamp": {"sec": t // 1_000_000_000, "nsec": t % 1_000_000_000},
                                                 "frame_id": ring.meta["topic"], "format": "jpeg", "tick": tick,
                                                 "data": base64.b64encode(buf.getvalue()).decode()})
                self.frame_after[i] = number

    def _texts(self, t: int) -> None:
        c = self.tel.counters()
        if c["active"] != self.model:
            self.model = c["active"]
            self._put(self.model_id, t, {"text": self.model})
        if c["failsafe_reason"] != self.reason:
            self.reason = c["failsafe_reason"]
            self._put(self.failsafe_id, t, {"text": self.reason})

    def _put(self, channel: int, t_ns: int, msg: dict) -> None:
        self.w.add_message(channel, log_time=t_ns, data=json.dumps(msg).encode(), publish_time=t_ns)
        self.messages += 1

    def close(self) -> None:
        self.w.finish()
        self.f.close()
        self.channels.close()
        for ring in self.frames:
            ring.close()
        self.tel.close()


def record(run_dir: str, out_path: str, seconds: float, topics=None, every_s: float = 0.05, stop=None,
           max_bytes: float = float("inf"), progress=None, board_path: str | None = None) -> dict:
    """Record for ``seconds`` (polling the rings every ``every_s``; the ring holds 4096 ticks),
    until ``stop`` (a threading.Event) is set, or before the file passes ``max_bytes``.
    ``progress(dict)`` hears how far it got after every poll."""
    r = Recorder(run_dir, out_path, topics, board_path)
    ticks, end, why = 0, time.monotonic() + seconds, "done"
    try:
        while time.monotonic() < end:
            if stop is not None and stop.wait(every_s):
                why = "stopped"
                break
            if stop is None:
                time.sleep(every_s)
            ticks += r.poll()
            if r.f.tell() + 2 * CHUNK_BYTES > max_bytes:
                why = "quota"
                break
            if progress is not None:
                progress({"ticks": ticks, "bytes": r.f.tell()})
        ticks += r.poll() if why != "quota" else 0
    finally:
        r.close()
    return {"path": out_path, "ticks": ticks, "messages": r.messages, "bytes": os.path.getsize(out_path), "end": why,
            "frames_missed": sum(f.missed for f in r.frames)}
