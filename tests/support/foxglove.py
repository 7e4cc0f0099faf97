"""A Foxglove WebSocket client for the tests: the protocol's client side, written from its
specification, to check what nnos's Foxglove server (the foxglove-sdk package) publishes."""
from __future__ import annotations

import json
import struct
import time

FOXGLOVE = ["foxglove.sdk.v1", "foxglove.websocket.v1"]     # what the Foxglove app offers; the sdk speaks the first


class FoxgloveClient:
    """The client side of the Foxglove WebSocket protocol (foxglove.sdk.v1): serverInfo, advertise,
    subscribe, binary messageData frames (opcode 1, subscription id, timestamp, payload)."""

    def __init__(self, ws):
        self.ws = ws
        assert ws.subprotocol == FOXGLOVE[0]
        self.channels: dict[int, dict] = {}
        self.info = None

    def until_advertised(self, topics: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not topics <= {c["topic"] for c in self.channels.values()}:
            assert time.monotonic() < deadline, f"advertised only {sorted(c['topic'] for c in self.channels.values())}"
            self._take(self.ws.recv(timeout=timeout))

    def _take(self, frame):
        if isinstance(frame, bytes):
            return frame
        m = json.loads(frame)
        if m["op"] == "serverInfo":
            self.info = m
        elif m["op"] == "advertise":
            self.channels.update({c["id"]: c for c in m["channels"]})
        return None

    def subscribe_all(self) -> dict[int, dict]:
        subs = {i: c for i, c in enumerate(self.channels.values())}
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": i, "channelId": c["id"]} for i, c in subs.items()]}))
        return subs

    def messages(self, seconds: float) -> list[tuple[int, int, bytes]]:
        out, end = [], time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                frame = self._take(self.ws.recv(timeout=left))
            except TimeoutError:
                break
            if frame is not None and frame[0] == 1:
                sub, ts = struct.unpack_from("<IQ", frame, 1)
                out.append((sub, ts, frame[13:]))
        return out
