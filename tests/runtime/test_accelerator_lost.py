"""A lost accelerator (the GPU reset, the driver gone, out of memory mid-run): the tick it
happens on fails safe, and from the next tick the same model runs on its spare — bound on the
CPU and verified when the model was admitted — with the reason said once. Run on the vulkan
backend on lavapipe; the device's loss is injected at the submit (no real device can be lost
on demand here), the one place the backend reports it."""
from __future__ import annotations

import pytest

from nnos.backends import ops_vulkan
from nnos.errors import BackendError
from nnos.runtime.loop import Loop, LoopConfig
from nnos.store import ModelStore
from nnos.telemetry import TelemetryReader, TelemetryWriter
from nnos_hardware.devices import SimulatedDevice
from tests.support.policies import board_at, store_model
from tests.support.timing import scaled

pytestmark = pytest.mark.skipif(ops_vulkan.available() is not None, reason=f"no Vulkan: {ops_vulkan.available()}")


def lose_device(exe):
    def lost():
        raise BackendError("vulkan backend: the device was lost mid-run")
    exe._submit = lost


def test_a_lost_device_fails_one_tick_safe_then_the_cpu_spare_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("NNOS_VULKAN_CACHE", str(tmp_path / "vk"))
    board = board_at(tmp_path, 100)
    dev = SimulatedDevice("cartpole", board.devices[0].channels, keep_sent=64,
                          source=lambda t: {"cart": [0.1, 0.0], "pole": [0.05, 0.0]})
    dev.open()
    store = ModelStore(str(tmp_path / "data"))
    tel = TelemetryWriter(str(tmp_path / "t.tel"), capacity=4096)
    said = []
    loop = Loop(board, {"cartpole": dev}, store, tel, LoopConfig(backend="vulkan", probation_s=0.2), log=said.append)
    store.activate(store_model(store, board.model), "test")
    loop.load_initial()
    try:
        gpu = loop.active
        spare = gpu.spare
        assert gpu.backend == "vulkan" and spare.backend == "cpu", "the spare is bound when the model is"
        loop.run(None, scaled(0.5))
        before = {k: int(tel.c[i]) for k, i in tel.idx.items()}
        lose_device(gpu.exe)
        loop.run(None, scaled(1.0))
        after = {k: int(tel.c[i]) for k, i in tel.idx.items()}
        shown = TelemetryReader(str(tmp_path / "t.tel")).counters()["backend"]   # what /v1/status shows
    finally:
        loop.shutdown()
        tel.close()
    assert loop.active is spare and gpu.spare is None, "the spare runs; the lost slot is let go"
    assert after["accelerator_lost"] == 1 and before["accelerator_lost"] == 0
    assert after["failsafe_entries"] - before["failsafe_entries"] == 1, (before, after)   # the one tick
    assert after["ticks"] - before["ticks"] >= 100 * 1.0 * 0.5                               # it kept ticking
    lines = [s for s in said if "device was lost" in s]
    assert lines == ["loop: vulkan backend: the device was lost mid-run; model "
                     f"{gpu.id[:12]} runs on the cpu backend from the next tick",
                     "loop: FAILSAFE: vulkan backend: the device was lost mid-run"], said
    assert shown.startswith("cpu"), shown


def test_a_shadow_that_loses_its_device_goes_on_on_its_spare(tmp_path, monkeypatch):
    """A shadow run on the accelerator: its lost device never reaches the actuators or the loop
    (no failsafe); the shadow goes on on its CPU spare, and the lost slot is closed."""
    from nnos.runtime.slots import Slot
    monkeypatch.setenv("NNOS_VULKAN_CACHE", str(tmp_path / "vk"))
    board = board_at(tmp_path, 100)
    dev = SimulatedDevice("cartpole", board.devices[0].channels, keep_sent=64,
                          source=lambda t: {"cart": [0.1, 0.0], "pole": [0.05, 0.0]})
    dev.open()
    store = ModelStore(str(tmp_path / "data"))
    tel = TelemetryWriter(str(tmp_path / "t.tel"), capacity=4096)
    said = []
    loop = Loop(board, {"cartpole": dev}, store, tel, LoopConfig(backend="cpu", probation_s=0.2), log=said.append)
    mid = store_model(store, board.model)
    store.activate(mid, "test")
    loop.load_initial()
    try:
        gpu = Slot(mid, store.load(mid), board, {"cartpole": dev}, "vulkan")
        loop.shadow = gpu
        loop._reset_divergence()
        lose_device(gpu.exe)
        loop.run(None, scaled(1.0))
        c = {k: int(tel.c[i]) for k, i in tel.idx.items()}
    finally:
        loop.shutdown()
        tel.close()
    assert loop.shadow is not gpu and loop.shadow.backend == "cpu" and gpu.spare is None
    assert c["accelerator_lost"] == 1 and c["failsafe_entries"] == 0, c
    assert c["shadow_ticks"] >= 100 * 1.0 * 0.5 - 1, c
    assert not any("FAILSAFE" in s for s in said), said
