"""Recording the live loop as MCAP from its shared-memory rings: every channel's values tick by
tick as they were read and sent, the loop's records, the model and failsafe events — read back
with the mcap package's own reader; a file cut short is readable up to its last chunk; and
`nnos record` beside a running loop."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nnos.recorder import Recorder
from tests.support.live import Live, messages
from tests.support.paths import ROOT
from tests.support.timing import scaled

mcap_reader = pytest.importorskip("mcap.reader")


def test_every_channel_every_tick_as_mcap(tmp_path):
    live = Live(tmp_path)
    try:
        live.ticks(5)                                      # before the recording: not in it
        rec = Recorder(str(live.run), str(tmp_path / "s.mcap"))
        live.ticks(120)
        assert rec.poll() == 120
        live.ticks(80)
        assert rec.poll() == 80
        rec.close()
    finally:
        live.close()
    got = messages(str(tmp_path / "s.mcap"))
    assert set(got) == {"/cartpole/cart", "/cartpole/pole", "/cartpole/force", "/loop", "/model", "/failsafe"}
    assert [m["tick"] for m in got["/cartpole/cart"]] == list(range(5, 205))
    for m in got["/cartpole/cart"]:
        np.testing.assert_array_equal(np.float32(m["values"]), live.fed[m["tick"]][0])
    for m in got["/cartpole/pole"]:
        np.testing.assert_array_equal(np.float32(m["values"]), live.fed[m["tick"]][1])
    assert [m["values"][0] for m in got["/cartpole/force"]] == [live.sent[t] for t in range(5, 205)]
    assert got["/cartpole/force"][0]["units"] == "N" and got["/cartpole/cart"][0]["names"] == ["position", "velocity"]
    assert len(got["/loop"]) == 200 and {m["mode"] for m in got["/loop"]} <= {"running", "probation", "failsafe"}
    assert got["/model"][0]["text"] == live.store.state()["active"]


def test_a_recording_cut_short_is_readable_up_to_its_last_chunk(tmp_path):
    live = Live(tmp_path)
    try:
        rec = Recorder(str(live.run), str(tmp_path / "s.mcap"))
        for _ in range(8):
            live.ticks(400)
            rec.poll()
        rec.close()
    finally:
        live.close()
    whole = (tmp_path / "s.mcap").read_bytes()
    (tmp_path / "cut.mcap").write_bytes(whole[: int(len(whole) * 0.6)])      # a power cut mid-write
    ticks = []
    with open(tmp_path / "cut.mcap", "rb") as f:
        try:
            for _, channel, message in mcap_reader.NonSeekingReader(f).iter_messages(log_time_order=False):
                if channel.topic == "/cartpole/cart":
                    ticks.append(json.loads(message.data)["tick"])
        except Exception:                                  # the torn end
            pass
    assert len(ticks) > 1000 and ticks == list(range(ticks[0], ticks[0] + len(ticks)))


def test_nnos_record_beside_a_running_loop(tmp_path):
    live = Live(tmp_path)
    stop, t = live.ticking()
    try:
        out = tmp_path / "cli.mcap"
        r = subprocess.run([sys.executable, "-m", "nnos.cli", "record", "--seconds", "1.5", "--data", str(live.data),
                            "--out", str(out), "--channels", "/cartpole/force"], cwd=ROOT, capture_output=True,
                           text=True, timeout=scaled(60))
        bad = subprocess.run([sys.executable, "-m", "nnos.cli", "record", "--seconds", "1", "--data", str(live.data),
                              "--out", str(tmp_path / "x.mcap"), "--channels", "/cartpole/torque"], cwd=ROOT,
                             capture_output=True, text=True, timeout=scaled(60))
    finally:
        stop.set()
        t.join()
        live.close()
    assert r.returncode == 0, r.stderr
    got = messages(str(out))
    assert set(got) == {"/cartpole/force", "/loop", "/model", "/failsafe"}
    assert len(got["/cartpole/force"]) >= 20
    assert bad.returncode == 2 and "no such channel ['/cartpole/torque']" in bad.stderr


def test_the_channel_ring_allocates_nothing_per_tick(tmp_path):
    import tracemalloc
    live = Live(tmp_path)
    try:
        for t in range(200):
            live.chans.record(t, t, 1)
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for t in range(200, 5200):
            live.chans.record(t, t, 1)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename") if s.size_diff > 0)
        tracemalloc.stop()
    finally:
        live.close()
    assert grown < 4096, f"{grown} bytes kept over 5000 ticks"


def test_the_frame_ring_keeps_the_newest_frames_and_counts_what_a_slow_reader_missed(tmp_path):
    from nnos.frames import FrameReader, FrameWriter
    from nnos_hardware.channels import SENSOR, Channel, Sample
    sample = Sample(Channel("frame", SENSOR, (4, 6, 3), 0, 255, dtype=np.dtype(np.uint8)))
    w = FrameWriter(str(tmp_path / "frames-cam-frame"), {"topic": "/cam/frame"}, sample, slots=4)
    r = FrameReader(str(tmp_path / "frames-cam-frame"))
    try:
        assert r.meta == {"topic": "/cam/frame"} and r.since(-1) == []
        for tick in range(3):
            w.record(tick)                                   # no new frame: nothing written
        assert r.last() is None
        got = []
        for k in range(10):
            sample.values.fill(k)
            sample.count += 1
            sample.t_host = 100.0 + k
            w.record(50 + k)
            w.record(51 + k)                                 # the same frame at the next tick: once
            if k in (1, 8):                                  # a reader that polls now and then
                got += r.since(got[-1][0] if got else -1)
        assert [n for n, *_ in got] == [0, 1, 5, 6, 7, 8] and r.missed == 3       # 2, 3, 4 were overwritten
        assert all(int(f.max()) == n and t == 50 + n and t_ns == int((100.0 + n) * 1e9) for n, t, t_ns, f in got)
    finally:
        r.close()
        w.close()
