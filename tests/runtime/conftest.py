"""Loop tests: the loop in-process against simulated devices (no processes), and helpers to
make small models for it."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import nnos
from nnos_hardware.board import load_board
from nnos_hardware.devices import SimulatedDevice
from nnos.runtime.loop import Loop, LoopConfig
from nnos.store import ModelStore
from nnos.telemetry import TelemetryWriter
from tests.conftest import ROOT

BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")


def board_at(tmp_path, rate_hz=50, failsafe=""):
    text = open(BOARD).read().replace("rate_hz = 50", f"rate_hz = {rate_hz}")
    text = text.replace('model = "models/cartpole/cartpole.onnx"', f'model = "{ROOT}/models/cartpole/cartpole.onnx"')
    if failsafe:
        text += "\n[failsafe]\n" + failsafe + "\n"
    p = tmp_path / "board.toml"
    p.write_text(text)
    return load_board(str(p))


def policy_variant(tmp_path, name, scale=1.0, nan=False, slow=0):
    """The cart-pole policy with its last layer scaled (another model), made to output NaN,
    or made slow (``slow`` extra 256×256 matmuls per call)."""
    m = onnx.load(os.path.join(ROOT, "models", "cartpole", "cartpole.onnx"))
    for init in m.graph.initializer:
        if init.name == "W2":
            w = numpy_helper.to_array(init) * scale
            if nan:
                w = w * np.float32("nan")
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), "W2"))
    for i in range(slow):
        big = numpy_helper.from_array(np.full((256, 256), 1e-3, np.float32), f"big{i}")
        m.graph.initializer.append(big)
        src = "obs" if i == 0 else f"s{i - 1}"
        if i == 0:
            m.graph.initializer.append(numpy_helper.from_array(np.zeros((4, 256), np.float32), "pad"))
            m.graph.node.append(helper.make_node("MatMul", ["obs", "pad"], ["p0"]))
            src = "p0"
        m.graph.node.append(helper.make_node("MatMul", [src, f"big{i}"], [f"s{i}"]))
    if slow:
        m.graph.initializer.append(numpy_helper.from_array(np.zeros((256, 1), np.float32), "sink"))
        m.graph.node.append(helper.make_node("MatMul", [f"s{slow - 1}", "sink"], ["z"]))
        m.graph.node[-1].output[0] = "z"
        out = next(n for n in m.graph.node if "action" in n.output)
        out.output[0] = "action_pre"
        m.graph.node.append(helper.make_node("Add", ["action_pre", "z"], ["action"]))
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(m, path)
    return path


def store_model(store, path) -> str:
    plan = nnos.compile(path, check=False)
    return store.put(plan.to_bytes())


class Rig:
    """A Loop over a SimulatedDevice whose sensors follow ``self.state`` (no physics)."""

    def __init__(self, tmp_path, rate_hz=50, failsafe="", budget=0.5, probation_s=0.2, active=True):
        self.board = board_at(tmp_path, rate_hz, failsafe)
        self.dev = SimulatedDevice("cartpole", self.board.devices[0].channels)
        self.dev.open()
        self.state = np.array([0.0, 0.0, 0.02, 0.0])
        self.feed()
        self.store = ModelStore(str(tmp_path / "data"))
        self.logs = []
        if active:
            mid = store_model(self.store, self.board.model)
            self.store.activate(mid, "test")
        self.tel = TelemetryWriter(str(tmp_path / "telemetry"), capacity=16384)
        self.loop = Loop(self.board, {"cartpole": self.dev}, self.store, self.tel,
                         LoopConfig(budget_fraction=budget, probation_s=probation_s), log=self.logs.append)
        self.loop.load_initial()

    def live(self):
        """Sensors that report on every poll, for runs of the real loop."""
        self.dev.source = lambda t: {"cart": self.state[:2], "pole": self.state[2:]}

    def feed(self):
        self.dev.feed("cart", self.state[:2])
        self.dev.feed("pole", self.state[2:])

    def ticks(self, n, feed=True):
        for _ in range(n):
            if feed:
                self.feed()
            self.loop.tick()

    @property
    def force(self) -> float:
        return float(self.dev.commands["force"][0])


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**kw):
        made.append(Rig(tmp_path, **kw))
        return made[-1]
    yield make
    for r in made:
        r.loop.shutdown()
        r.tel.close()
