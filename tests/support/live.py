"""The cart-pole loop in-process with both shared-memory rings in DATA/run, as the loop process
has them (for recordings), and an MCAP file's messages by topic."""
from __future__ import annotations

import json
import threading

import numpy as np

from nnos.runtime.__main__ import channel_sources
from nnos.runtime.loop import Loop, LoopConfig
from nnos.store import ModelStore
from nnos.telemetry import ChannelWriter, TelemetryWriter
from nnos_hardware.devices import SimulatedDevice
from tests.support.policies import board_at, store_model


class Live:
    """The cart-pole loop in-process with both rings in DATA/run, as the loop process has them."""

    def __init__(self, tmp_path, data=None):
        self.board = board_at(tmp_path, 50)
        self.dev = SimulatedDevice("cartpole", self.board.devices[0].channels, keep_sent=0)
        self.dev.open()
        self.data = data or tmp_path / "data"
        self.run = self.data / "run"
        self.run.mkdir(parents=True, exist_ok=True)
        self.store = ModelStore(str(self.data))
        self.store.activate(store_model(self.store, self.board.model), "test")
        self.tel = TelemetryWriter(str(self.run / "telemetry"))
        self.chans = ChannelWriter(str(self.run / "channels"), channel_sources(self.board, {"cartpole": self.dev}))
        self.loop = Loop(self.board, {"cartpole": self.dev}, self.store, self.tel, LoopConfig(probation_s=0.1),
                         log=lambda m: None, channels=self.chans)
        self.loop.load_initial()
        self.fed, self.sent = {}, {}

    def ticks(self, n: int) -> None:
        rng = np.random.default_rng(self.loop.tick_no)
        for _ in range(n):
            cart, pole = rng.uniform(-1, 1, 2), rng.uniform(-0.2, 0.2, 2)
            self.dev.feed("cart", cart)
            self.dev.feed("pole", pole)
            tick = self.loop.tick_no
            self.loop.tick()
            self.fed[tick] = (cart.astype(np.float32), pole.astype(np.float32))
            self.sent[tick] = float(self.dev.commands["force"][0])

    def close(self) -> None:
        self.loop.shutdown()
        self.tel.close()
        self.chans.close()


    def ticking(self, every_s: float = 0.02):
        """Ticks on a thread until the returned event is set (then join the thread it returns)."""
        stop = threading.Event()

        def run():
            while not stop.is_set():
                self.ticks(1)
                stop.wait(every_s)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return stop, t


def messages(path: str) -> dict[str, list]:
    from mcap.reader import make_reader
    out = {}
    with open(path, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            assert schema.encoding == "jsonschema" and channel.message_encoding == "json"
            out.setdefault(channel.topic, []).append(json.loads(message.data))
    return out
