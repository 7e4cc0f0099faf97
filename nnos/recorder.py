"""Recording a live session as MCAP (the robotics log format Foxglove and ROS 2 tools open), in
a process of its own: it reads the loop's shared-memory rings (RUN/channels: every channel
each tick; RUN/telemetry: mode, timing, the model's first input and output, the active model,
failsafe reasons) and never touches the loop.

Topics, JSON messages with a JSON Schema each: ``/<device>/<channel>`` ({tick, values, names,
units}), ``/loop`` ({tick, mode, lateness_us, compute_us, inputs, outputs}), ``/model`` and
``/failsafe`` when they change; a camera's ``/<device>/frame`` as foxglove.CompressedImage
(JPEG, compressed here by Pillow from the loop's frame ring, RUN/frames-*, so Foxglove shows it
as video) — nnos/live.py reads them. Chunks of 64 KiB, each written and flushed as it fills: after a
power cut mid-write, the file up to its last complete chunk is readable.
"""
from __future__ import annotations

import json
import os
import time

from .live import Feed, schema

CHUNK_BYTES = 64 * 1024


class Recorder:
    def __init__(self, run_dir: str, out_path: str, topics: list[str] | None = None, board_path: str | None = None):
        from mcap.writer import CompressionType, Writer
        self.feed = Feed(run_dir, topics)                # an unknown topic: refused before the file exists
        self.f = open(out_path, "wb")
        self.w = Writer(self.f, chunk_size=CHUNK_BYTES, compression=CompressionType.NONE)
        self.w.start(profile="", library="nnos")
        schemas = {name: self.w.register_schema(name, "jsonschema", schema(name)) for _, name in self.feed.topics}
        self.ids = {topic: self.w.register_channel(topic, "json", schemas[name]) for topic, name in self.feed.topics}
        self.w.add_metadata("nnos.layout", {"channels": json.dumps(self.feed.layout + self.feed.cameras)})
        if board_path:                                  # what `nnos replay` binds a candidate model with
            with open(board_path) as f:
                self.w.add_metadata("nnos.board", {"path": board_path, "toml": f.read()})
        self.messages = 0

    @property
    def frames(self):
        return self.feed.frames

    def poll(self) -> int:
        """Everything the rings got since the last poll into the file; the ticks written."""
        for topic, t, msg in self.feed.poll() + self.feed.frames_jpeg():
            self._put(self.ids[topic], t, msg)
        return self.feed.polled

    def _put(self, channel: int, t_ns: int, msg: dict) -> None:
        self.w.add_message(channel, log_time=t_ns, data=json.dumps(msg).encode(), publish_time=t_ns)
        self.messages += 1

    def close(self) -> None:
        self.w.finish()
        self.f.close()
        self.feed.close()


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
            "frames_missed": r.feed.frames_missed}
