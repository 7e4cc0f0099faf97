"""Frames to actions in the loop (in-process): the vision example's board — the synthetic camera,
the image pre-processing, the CNN every 3 ticks on its worker, its action chunks ensembled —
drives a simulated arm that follows the disk; a camera that is unplugged fails the loop safe
and is opened again when it is back; one that stops is stale; bad frames are counted and the
loop keeps its actions."""
from __future__ import annotations

import numpy as np
import pytest

from nnos.runtime.loop import Loop, LoopConfig
from nnos.store import ModelStore
from nnos.telemetry import TelemetryWriter
from nnos_hardware.board import load_board
from nnos_hardware.devices import SimulatedDevice
from nnos_hardware.devices.factory import make_device
from nnos_hardware.sim.camera import target
from nnos_models.vision.build import joints
from tests.support.paths import BOARDS, ROOT
from tests.support.policies import store_model
from tests.support.timing import scaled

pytestmark = pytest.mark.xdist_group("loop")


class VisionRig:
    def __init__(self, tmp_path, backend="numpy"):
        text = open(f"{BOARDS}/vision_so101.toml").read().replace('model = "models/', f'model = "{ROOT}/models/')
        (tmp_path / "vision.toml").write_text(text)
        self.board = board = load_board(str(tmp_path / "vision.toml"))
        self.cam = make_device(board.device("cam"))
        self.arm = SimulatedDevice("arm", board.device("arm").channels, keep_sent=0,
                                   source=lambda t: {"position": self.arm.commands["goal"]})
        self.cam.open()
        self.arm.open()
        self.store = ModelStore(str(tmp_path / "data"))
        self.tel = TelemetryWriter(str(tmp_path / "data.tel"), capacity=4096)
        self.logs: list[str] = []
        self.loop = Loop(board, {"cam": self.cam, "arm": self.arm}, self.store, self.tel,
                         LoopConfig(backend=backend, probation_s=0.2, admission_runs=10), log=self.logs.append)
        self.store.activate(store_model(self.store, board.model), "test")
        self.loop.load_initial()

    def counters(self) -> dict:
        return {k: int(self.tel.c[i]) for k, i in self.tel.idx.items()}

    def close(self):
        self.loop.shutdown()
        self.tel.close()


def test_the_cnn_follows_the_disk_through_camera_preprocessing_and_chunks(tmp_path):
    r = VisionRig(tmp_path)
    try:
        r.loop.run(None, scaled(3.0))
        c = r.counters()
        assert c["inferences"] >= 20 and r.cam.stats()["frames"] >= 30, (c, r.cam.stats())
        frame = r.cam.samples["frame"]
        want = joints(*target(frame.t_device_us / 1e6))
        goal = r.arm.commands["goal"]
        # the goal follows the disk seen in the latest frame (the chunk looks ≤ 10 ticks ahead,
        # the disk moves ≤ 0.6 rad/s in pan; max_rate 2 rad/s keeps up)
        assert np.abs(goal - want).max() < 0.06, (goal, want)
        assert not r.loop.safety.active and c["failsafe_entries"] <= 1 + c["late_inferences"], (c, r.logs)
    finally:
        r.close()


def test_an_unplugged_camera_fails_safe_and_comes_back(tmp_path):
    r = VisionRig(tmp_path)
    r.loop.io.reconnect_s = 0.1
    try:
        r.loop.run(None, scaled(1.5))
        ticks = r.counters()["ticks"]
        r.cam.world.unplug()
        r.loop.run(None, scaled(1.0))
        assert any("FAILSAFE: device cam lost" in line and "unplugged" in line for line in r.logs), r.logs
        assert r.counters()["ticks"] > ticks + 50                 # the loop kept ticking
        r.cam.world.replug()
        r.loop.run(None, scaled(2.0))
        assert any("device cam is back" in line for line in r.logs), r.logs
        assert r.cam.stats()["opens"] == 2
        entries = r.counters()["failsafe_entries"]
        r.loop.run(None, scaled(1.0))
        assert r.counters()["failsafe_entries"] == entries and not r.loop.safety.active
    finally:
        r.close()


def test_a_camera_that_stops_is_stale_and_bad_frames_are_only_counted(tmp_path):
    r = VisionRig(tmp_path)
    try:
        r.loop.run(None, scaled(1.5))
        entries = r.counters()["failsafe_entries"]
        for fault in ("truncated", "size", "format"):                # one at a time: a 67 ms gap, < stale_ms
            r.cam.world.inject(fault)
            r.loop.run(None, scaled(0.4))
        assert r.cam.stats()["bad_frames"] == 3
        assert r.counters()["failsafe_entries"] == entries, r.logs
        r.cam.world.stopped = True
        r.loop.run(None, scaled(1.0))
        stale = [line for line in r.logs if "FAILSAFE: sensor cam.frame stale" in line]
        assert stale and "> 0.150 s" in stale[0], r.logs[-5:]
    finally:
        r.close()
