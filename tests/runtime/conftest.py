"""Loop tests: the loop in-process against simulated devices (no processes), and helpers to
make small models for it."""
from __future__ import annotations


import numpy as np
import pytest

from nnos_hardware.devices import SimulatedDevice
from nnos.runtime.loop import Loop, LoopConfig
from nnos.store import ModelStore
from nnos.telemetry import TelemetryWriter
from tests.support.policies import board_at, policy_variant, store_model  # noqa: F401 - the rig uses them



class Rig:
    """A Loop over a SimulatedDevice whose sensors follow ``self.state`` (no physics)."""

    def __init__(self, tmp_path, rate_hz=50, failsafe="", budget=0.5, probation_s=0.2, active=True, model=None,
                 model_cpus=1):
        self.board = board_at(tmp_path, rate_hz, failsafe, model_cpus)
        self.dev = SimulatedDevice("cartpole", self.board.devices[0].channels)
        self.dev.open()
        self.state = np.array([0.0, 0.0, 0.02, 0.0])
        self.feed()
        self.store = ModelStore(str(tmp_path / "data"))
        self.logs = []
        if active:
            mid = store_model(self.store, model or self.board.model)
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

    def make(folder: str = "", **kw):
        """A rig in tmp_path, or in its own sub-folder (its board, store and telemetry apart
        from another rig's)."""
        path = tmp_path / folder if folder else tmp_path
        path.mkdir(exist_ok=True)
        made.append(Rig(path, **kw))
        return made[-1]
    yield make
    for r in made:
        r.loop.shutdown()
        r.tel.close()
