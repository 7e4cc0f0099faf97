"""`nnos replay`: a recording of the live loop fed to a candidate model offline — the same model
reproduces the recorded actions, another one diverges where an independent computation says it
does, and the candidate's actions can be written as MCAP."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import nnos
from nnos.errors import NnosError
from nnos.recorder import Recorder
from nnos.runtime.replay import evaluate
from tests.support.live import Live, messages
from tests.support.paths import ROOT
from tests.support.policies import policy_variant
from tests.support.timing import scaled

pytest.importorskip("mcap")


@pytest.fixture
def recording(tmp_path):
    live = Live(tmp_path)
    try:
        rec = Recorder(str(live.run), str(tmp_path / "s.mcap"), board_path=live.board.path)
        for _ in range(3):
            live.ticks(100)
            rec.poll()
        rec.close()
    finally:
        live.close()
    return live, str(tmp_path / "s.mcap")


def test_the_recorded_model_reproduces_its_actions(recording):
    live, path = recording
    rep = evaluate(path, live.board.model, threshold=1e-3)
    assert rep["ticks"] == 300 and rep["compared_ticks"] >= 250
    d = rep["channels"]["/cartpole/force"]
    assert d["max"] < 1e-4 and d["first_above"] is None, d


def test_another_model_diverges_where_it_should(recording, tmp_path):
    live, path = recording
    variant = policy_variant(tmp_path, "v", scale=1.5)
    rep = evaluate(path, variant, threshold=0.5)
    plan = nnos.compile(variant)
    want = []
    for t in sorted(live.fed):
        cart, pole = live.fed[t]
        force = float(np.clip(10 * plan({"obs": np.concatenate([cart, pole])[None]})["action"].reshape(-1)[0], -10, 10))
        want.append((t, abs(force - live.sent[t])))
    d = rep["channels"]["/cartpole/force"]
    np.testing.assert_allclose(d["max"], max(w for _, w in want), rtol=1e-3)
    assert d["first_above"] == next(t for t, w in want if w > 0.5)


def test_nnos_replay_compares_and_writes_the_candidates_actions(recording, tmp_path):
    _, path = recording
    variant = policy_variant(tmp_path, "v", scale=1.5)
    out = tmp_path / "cand.mcap"
    r = subprocess.run([sys.executable, "-m", "nnos.cli", "replay", path, "--model", variant, "--compare",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=scaled(120))
    assert r.returncode == 0, r.stderr
    assert "300 ticks into v.onnx" in r.stdout and "/cartpole/force: max" in r.stdout
    assert len(messages(str(out))["/cartpole/force"]) == 300
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(NnosError, match="not an nnos MCAP recording"):
        evaluate(str(tmp_path / "junk.mcap"), variant)


def test_the_replay_device_plays_an_mcap_recording(recording):
    """A board's replay device (driver = "replay") reads nnos record's MCAP as it reads .nnrec."""
    from nnos_hardware.errors import DeviceError
    from nnos_hardware.recording import ReplayDevice
    live, path = recording
    dev = ReplayDevice("cartpole", path, speed=0)
    dev.open()
    seen = []
    while not dev.finished:
        dev.poll()
        seen.append(dev.latest("cart").values.copy())
    assert set(dev.channels) == {"cart", "pole", "force"}
    np.testing.assert_array_equal(np.array(seen[:300]), np.array([live.fed[t][0] for t in sorted(live.fed)]))
    assert [float(v[0]) for _, _, v in dev.recorded_commands] == [live.sent[t] for t in sorted(live.sent)]
    with pytest.raises(DeviceError, match="no channels of device 'arm'"):
        ReplayDevice("arm", path)
