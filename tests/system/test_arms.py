"""The arm boards end to end, as a builder runs them: `nnos up` on so101.toml and koch.toml
with the simulated bus in place of the USB adapter; calibration and arming through the HTTP
API; the tracking policy from models/arms moves the arm smoothly to its target (checked on the
loop's telemetry and on the bus's own trace); the stop disarms without a jump."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from nnos_hardware.board import load_board
from nnos_models.arms.build import POLICIES
from tests.support.arms import board_text, calibration_doc, goal_jumps, read_trace
from tests.support.timing import retried, scaled, wait_until
from tests.support.up import Up, free_port, running

pytestmark = pytest.mark.xdist_group("system")
TICK = 2 * np.pi / 4096


def _misses_in(up: Up, ticks: int) -> int:
    """The loop's missed ticks over its next ``ticks`` ticks."""
    first = up.wait_for(lambda c, recs: True, scaled(10))[0]
    last = up.wait_for(lambda c, recs: c["ticks"] >= first["ticks"] + ticks, scaled(30))[0]
    return last["misses"] - first["misses"]


def _near(target, tol):
    def check(c, recs):
        return c["mode"] == "running" and len(recs) and np.abs(recs["inputs"][-1, :6] - target).max() < tol
    return check


@pytest.mark.slow
@pytest.mark.parametrize("name", ["so101", "koch"])
def test_an_arm_under_nnos_up_is_calibrated_armed_and_tracks_its_target(tmp_path, name):
    trace = tmp_path / "bus.trace"
    text = board_text(name, sim_args=("--trace", str(trace)))
    (tmp_path / "b.toml").write_text(text)
    board = load_board(str(tmp_path / "b.toml"))
    target = np.array(POLICIES[f"{name}_track"][1], np.float32)
    step = board.channel("arm", "goal").max_rate / board.rate_hz
    up = Up(tmp_path / "data", api_port=free_port(), board_text=text)
    try:
        url = up.wait_for_api(scaled(120))
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {up.token}"}, timeout=30)
        up.wait_for(running, scaled(60))
        r = api.post("/v1/arm")
        assert r.status_code == 409 and "no calibration for joints shoulder_pan, shoulder_lift" in r.json()["detail"]
        assert api.get("/v1/calibration").json()["missing"] == {"arm": board.device("arm").joint_names}
        doc = calibration_doc(board)
        bad = json.loads(json.dumps(doc))
        bad["devices"]["arm"]["wrist_roll"]["id"] = 9
        r = api.put("/v1/calibration", json=bad)
        assert r.status_code == 422 and "arm.wrist_roll was calibrated on servo 9" in r.text
        r = api.put("/v1/calibration", json=doc)
        assert r.status_code == 200 and r.json()["applied"] == ["arm"], r.text
        armed_at = up.counters()[0]["ticks"]
        r = api.post("/v1/arm")
        assert r.status_code == 200 and r.json()["armed"] == ["arm"], r.text
        dev = api.get("/v1/devices").json()["devices"][0]
        assert dev["armed"] is True and dev["state"] == "armed" and dev["joints"]["gripper"] == 6
        c, recs = up.wait_for(_near(target, 0.01), scaled(30))
        moving = recs[recs["tick"] >= armed_at]
        pos = moving["inputs"][:, :6]
        assert len(pos) > 50
        assert np.abs(np.diff(pos, axis=0)).max() <= step + 3 * TICK, "never faster than max_rate"
        dist = np.abs(pos - target).max(axis=1)
        assert (np.diff(dist) <= 2 * TICK).all(), "every tick at least as close to the target (no overshoot)"
        # the rate holds while it drives the arm: no missed tick in 1000 (regression, CI: 1 miss
        # in the first 219 ticks on a loaded host failed the old "< ticks // 1000" at once)
        missed = retried(3, f"test_an_arm_under_nnos_up[{name}]", lambda: _misses_in(up, 1000),
                         lambda m: m and f"{m} missed ticks in 1000 (a host stall)")
        assert missed == 0, f"{missed} missed ticks in 1000 ticks, three windows in a row"
        with connect(url.replace("http", "ws") + "/v1/telemetry?hz=20",
                     additional_headers={"Authorization": f"Bearer {up.token}"}) as ws:
            msg = json.loads(ws.recv(timeout=10))
        assert msg["names"]["inputs"][:2] == ["arm.shoulder_pan", "arm.shoulder_lift"]
        r = api.post("/v1/disarm")
        assert r.status_code == 200 and r.json()["disarmed"] == ["arm"]
        assert api.get("/v1/devices").json()["devices"][0]["state"] == "disarmed"
        wait_until(lambda: [v for _, reg, v in read_trace(trace) if reg == "Torque_Enable"][-1] == {i: 0 for i in range(1, 7)},
                   scaled(5), "torque off")
        assert api.post("/v1/arm").status_code == 200                   # armed again where the arm is
    finally:
        up.stop()
    assert "actuators by their failsafe rules (arm.goal: hold); torque off" in up.log
    t = read_trace(trace)
    assert [v for _, reg, v in t if reg == "Torque_Enable"][-1] == {i: 0 for i in range(1, 7)}, "the stop disarms"
    assert goal_jumps(t, step / TICK, 1 / board.rate_hz) == []


@pytest.mark.slow
def test_the_dashboard_arms_and_disarms_and_names_the_joints(tmp_path):
    """Headless Chromium on the so101 board: the joint names as the plots' series, the Arm and
    Disarm buttons."""
    import os
    from playwright.sync_api import sync_playwright
    text = board_text("so101")
    (tmp_path / "b.toml").write_text(text)
    board = load_board(str(tmp_path / "b.toml"))
    up = Up(tmp_path / "data", api_port=free_port(), board_text=text)
    try:
        url = up.wait_for_api(scaled(120))
        up.wait_for(running, scaled(60))
        headers = {"Authorization": f"Bearer {up.token}"}
        assert httpx.put(url + "/v1/calibration", json=calibration_doc(board), headers=headers).status_code == 200
        exe = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else "/usr/bin/chromium-browser"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"{url}/?token={up.token}")
            page.wait_for_function("document.body.dataset.armed === 'arm:0'", timeout=15000)
            page.wait_for_function("Object.keys(window.nnos.plots).length >= 3", timeout=15000)
            series = page.evaluate("Object.fromEntries(Object.entries(window.nnos.plots).map(([k, u]) => "
                                   "[k, u.series.slice(1).map((s) => s.label)]))")
            joints = [j for j in series.values() if "shoulder_pan" in j]
            assert joints and joints[0][:2] == ["shoulder_pan", "shoulder_lift"] and "gripper" in joints[0], series
            page.click("#arm")
            page.wait_for_function("document.body.dataset.armed === 'arm:1'", timeout=15000)
            page.click("#disarm")
            page.wait_for_function("document.body.dataset.armed === 'arm:0'", timeout=15000)
            browser.close()
    finally:
        up.stop()
