"""Channel ↔ tensor bindings (scale, offset, clamp, rate limit, no allocation) and recording
a run to replay it as a device."""
from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest

import nnos
from nnos_hardware.binding import Binder
from nnos_hardware.board import load_board
from nnos_hardware.channels import ACTUATOR, SENSOR, Channel
from nnos_hardware.devices import NnosSerialDevice, SimulatedDevice
from nnos_hardware.recording import RecordingDevice, ReplayDevice, read_recording
from tests.support.paths import ROOT

BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")


def _sim_device(board):
    return SimulatedDevice("cartpole", board.devices[0].channels)


def test_inputs_and_outputs_are_scaled_clamped_and_rate_limited(tmp_path):
    text = open(BOARD).read().replace('channels = ["cartpole.cart", "cartpole.pole"]',
                                      'channels = ["cartpole.cart", "cartpole.pole"]\nscale = [1, 2, 3, 4]\noffset = 0.5')
    text = text.replace("clamp = [-10.0, 10.0]", "clamp = [-8.0, 8.0]\nmax_step = 3.0")
    p = tmp_path / "b.toml"
    p.write_text(text)
    board = load_board(str(p))
    dev = _sim_device(board)
    dev.open()
    ins = {"obs": np.zeros((1, 4), np.float32)}
    outs = {"action": np.zeros((1, 1), np.float32)}
    b = Binder(board, {"cartpole": dev}, ins, outs)
    dev.feed("cart", [1.0, 1.0])
    dev.feed("pole", [1.0, -1.0])
    b.read_inputs()
    assert ins["obs"].tolist() == [[1.5, 2.5, 3.5, -3.5]]
    got = []
    for a in (1.0, 1.0, -0.05, -1.0, -1.0, -1.0):      # action·10 N, at most 3 N change per tick, ±8 N
        outs["action"][0, 0] = a
        b.write_outputs()
        got.append(float(dev.commands["force"][0]))
    assert got == pytest.approx([3.0, 6.0, 3.0, 0.0, -3.0, -6.0])
    for _ in range(3):
        b.write_outputs()
    assert float(dev.commands["force"][0]) == -8.0


def test_binding_allocates_no_arrays():
    board = load_board(BOARD)
    dev = _sim_device(board)
    dev.open()
    plan = nnos.compile(board.model, check=False)
    exe = plan.bind()
    b = Binder(board, {"cartpole": dev}, exe.inputs, exe.outputs)
    tick = lambda: (b.read_inputs(), exe.run(), b.write_outputs())   # noqa: E731
    tick()
    dom = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)
    tracemalloc.start()
    before = tracemalloc.take_snapshot().filter_traces([dom])
    for _ in range(2000):
        tick()
    after = tracemalloc.take_snapshot().filter_traces([dom])
    tracemalloc.stop()
    assert not [s for s in after.compare_to(before, "lineno") if s.count_diff > 0]


def test_record_a_serial_run_and_replay_it_into_a_new_model(device_side, tmp_path):
    board = load_board(BOARD)
    side = device_side(rate_hz=500)
    path = str(tmp_path / "run.nnrec")
    plan = nnos.compile(board.model, check=False)
    exe = plan.bind()
    live = []
    with RecordingDevice(NnosSerialDevice("cartpole", side.port, expected=board.devices[0].channels), path) as dev:
        b = Binder(board, {"cartpole": dev}, exe.inputs, exe.outputs)
        last = 0
        deadline = time.monotonic() + 3
        while len(live) < 100 and time.monotonic() < deadline:
            dev.poll(0.05)
            s = dev.latest("pole")
            if s.count == last:
                continue
            last = s.count
            side.values[2][:] = np.float32([0.01 * len(live), 0.0])   # the pole tilts as we go
            b.read_inputs()
            exe.run()
            b.write_outputs()
            dev.flush(s.t_device_us)
            live.append(float(dev.commands["force"][0]))
    header, records = read_recording(path)
    assert header["device"] == "cartpole"
    assert [c["name"] for c in header["channels"]] == ["cart", "pole", "force"]
    assert sum(r[0] == 2 for r in records) == len(live)
    # replay the recorded readings into a fresh plan, as fast as possible: same commands
    replay = ReplayDevice("cartpole", path, speed=0)
    assert len(replay.recorded_commands) == len(live)
    exe2 = nnos.compile(board.model, check=False).bind()
    with replay:
        b2 = Binder(board, {"cartpole": replay}, exe2.inputs, exe2.outputs)
        replayed = []
        while not replay.finished:
            replay.poll()
            b2.read_inputs()
            exe2.run()
            b2.write_outputs()
            replay.flush()
            replayed.append(float(replay.commands["force"][0]))
    # a reading of both channels is two records; commands follow each complete pair
    recorded = [float(v[0]) for _, _, v in replay.recorded_commands]
    assert len(replayed) >= len(recorded) > 50
    assert set(np.round(recorded, 5)) <= set(np.round(replayed, 5))


def test_replay_keeps_recorded_timing(tmp_path):
    chans = [Channel("x", SENSOR, (1,), -1, 1), Channel("u", ACTUATOR, (1,), -1, 1)]
    path = str(tmp_path / "t.nnrec")
    inner = SimulatedDevice("d", chans)
    with RecordingDevice(inner, path) as rec:
        for i in range(5):
            inner.feed("x", [i / 10])
            rec.poll()
            time.sleep(0.02)
    replay = ReplayDevice("d", path, speed=1.0)
    with replay:
        t0 = time.monotonic()
        seen = []
        while not replay.finished and time.monotonic() - t0 < 1:
            if replay.poll(0.05):
                seen.append((time.monotonic() - t0, float(replay.latest("x").values[0])))
    assert [v for _, v in seen] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert seen[-1][0] >= 0.07


def test_truncated_recording_keeps_whole_records(tmp_path):
    chans = [Channel("x", SENSOR, (3,), -1, 1)]
    path = str(tmp_path / "t.nnrec")
    inner = SimulatedDevice("d", chans)
    with RecordingDevice(inner, path, flush_every=1) as rec:
        for i in range(10):
            inner.feed("x", [0, 0, i / 10])
            rec.poll()
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-5])          # power cut mid-record
    _, records = read_recording(path)
    assert len(records) == 9
