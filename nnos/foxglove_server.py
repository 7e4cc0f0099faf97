"""The running loop, live in Foxglove: a Foxglove WebSocket server (the `foxglove-sdk` package)
in a process of its own, off the loop's CPU, fed from the loop's shared-memory rings
(nnos/live.py) — never from the loop. Every board channel with its names and units, ``/loop``
(mode, lateness, the model's inputs and outputs), ``/model``, ``/failsafe`` and each camera as
foxglove.CompressedImage (JPEG, encoded only while someone is subscribed to it).

Rate-limited by construction: it publishes each topic's newest message ``hz`` times a second
(images ``image_hz``) whatever clients subscribe to, and each client's outgoing queue is bounded
(the oldest message is dropped), so a greedy client costs this process, not the loop.

It listens on 127.0.0.1 only (``NNOS_FOXGLOVE_PORT``): the sdk's server has no authentication,
so clients reach it through the control plane's ``/v1/foxglove`` (the token, then a relay).

    python -m nnos.foxglove_server --run RUN [--port 8765] [--hz 30] [--image-hz 5] [--name NAME]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from . import flags
from .live import Feed, schema

BACKLOG = 256                 # messages queued per client before the oldest is dropped


class Subscriptions:
    """A foxglove ServerListener: how many clients are subscribed to each topic."""

    def __init__(self):
        self.count: dict[str, int] = {}
        self.lock = threading.Lock()

    def on_subscribe(self, client, channel) -> None:
        with self.lock:
            self.count[channel.topic] = self.count.get(channel.topic, 0) + 1

    def on_unsubscribe(self, client, channel) -> None:
        with self.lock:
            self.count[channel.topic] = max(0, self.count.get(channel.topic, 0) - 1)

    def watched(self, topic: str) -> bool:
        return self.count.get(topic, 0) > 0


class Publisher:
    """The rings of one loop run, as foxglove channels (a restarted loop's rings: a new Publisher)."""

    def __init__(self, run: str):
        import foxglove
        self.path = os.path.join(run, "channels")
        self.ino = os.stat(self.path).st_ino
        self.feed = Feed(run)
        self.wall = time.time_ns() - time.monotonic_ns()      # ring times are CLOCK_MONOTONIC
        self.channels = {}
        for topic, name in self.feed.topics:
            meta = {"nnos.schema": name}
            self.channels[topic] = foxglove.Channel(topic, message_encoding="json", metadata=meta,
                                                    schema=foxglove.Schema(name=name, encoding="jsonschema",
                                                                           data=schema(name)))

    def stale(self) -> bool:
        """The loop restarted: its rings are new files."""
        try:
            return os.stat(self.path).st_ino != self.ino
        except OSError:
            return True

    def publish(self, messages) -> int:
        for topic, t, msg in messages:
            self.channels[topic].log(msg, log_time=t + self.wall)
        return len(messages)

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()
        self.feed.close()


def _open(run: str, stop: threading.Event):
    while not stop.is_set():
        try:
            return Publisher(run)
        except (OSError, ValueError):                 # the loop has not made its rings yet
            stop.wait(0.2)
    return None


def serve(run: str, port: int, hz: float, image_hz: float, name: str, stop: threading.Event) -> None:
    import foxglove
    subs = Subscriptions()
    server = foxglove.start_server(name=name, host="127.0.0.1", port=port, server_listener=subs,
                                   message_backlog_size=BACKLOG)
    print(f"foxglove: serving on 127.0.0.1:{server.port} ({hz:g} Hz, images {image_hz:g} Hz)", file=sys.stderr, flush=True)
    pub, next_image = None, 0.0
    try:
        while not stop.wait(1.0 / hz):
            if pub is None or pub.stale():
                if pub is not None:
                    pub.close()
                pub = _open(run, stop)
                if pub is None:
                    break
            pub.publish(pub.feed.poll(latest=True))
            now = time.monotonic()
            if pub.feed.frames and now >= next_image:
                next_image = now + 1.0 / image_hz
                if any(subs.watched(f.meta["topic"]) for f in pub.feed.frames):
                    pub.publish(pub.feed.frames_jpeg(latest=True))
    finally:
        if pub is not None:
            pub.close()
        server.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnos.foxglove_server")
    ap.add_argument("--run", required=True, help="the supervisor's run directory (DATA/run)")
    ap.add_argument("--port", type=int, default=flags.FOXGLOVE_PORT.get())
    ap.add_argument("--hz", type=float, default=flags.FOXGLOVE_HZ.get())
    ap.add_argument("--image-hz", type=float, default=5.0)
    ap.add_argument("--name", default="nnos")
    a = ap.parse_args(argv)
    if not 0.1 <= a.hz <= 100 or not 0.1 <= a.image_hz <= 30:
        print(f"foxglove: --hz must be 0.1–100 and --image-hz 0.1–30; got {a.hz:g} and {a.image_hz:g}", file=sys.stderr)
        return 2
    stop = threading.Event()
    import signal
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serve(a.run, a.port, a.hz, a.image_hz, a.name, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
