"""Live data on a real uvicorn beside a loop that ticks (in this process, its rings in the same
data directory): WS /v1/live (the dashboard's stream) and WS /v1/foxglove (the Foxglove
WebSocket protocol through the token check, from the real nnos.foxglove_server process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.support.foxglove import FOXGLOVE, FoxgloveClient
from tests.support.paths import ROOT
from tests.support.timing import scaled, wait_until
from tests.support.up import free_port



def _ws(api, path: str) -> str:
    return api.url.replace("http", "ws") + path


def test_the_dashboard_stream_names_every_channel_and_sends_columns(beside):
    api, live = beside()
    with connect(_ws(api, "/v1/live?hz=10"), additional_headers={"Authorization": f"Bearer {api.token}"}) as ws:
        layout = json.loads(ws.recv(timeout=scaled(10)))
        assert layout["type"] == "layout" and layout["rate_hz"] == live.board.rate_hz
        chans = {c["topic"]: c for c in layout["channels"]}
        assert chans["/cartpole/cart"]["names"] == ["position", "velocity"] and chans["/cartpole/cart"]["units"] == "m, m/s"
        assert chans["/cartpole/force"]["kind"] == "actuator" and chans["/cartpole/force"]["range"] == [-10.0, 10.0]
        batches = [json.loads(ws.recv(timeout=scaled(10))) for _ in range(5)]
    assert all(b["type"] == "ticks" for b in batches)
    ticks = [t for b in batches for t in b["tick"]]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks) and len(ticks) >= 10, "every tick once, in order"
    b = batches[-1]
    n = len(b["tick"])
    assert len(b["t"]) == len(b["mode"]) == len(b["lateness_us"]) == n and b["t"] == sorted(b["t"])
    assert set(b["channels"]) == set(chans)
    assert all(len(row) == 2 for row in b["channels"]["/cartpole/cart"])
    sent = [live.sent[t] for t in b["tick"]]
    assert [row[0] for row in b["channels"]["/cartpole/force"]] == pytest.approx(sent, rel=1e-6), "the values the loop sent"
    assert b["active"] and b["loop_mode"] in ("running", "probation", "failsafe")


def test_the_streams_refuse_a_wrong_token_before_the_upgrade(beside):
    api, _ = beside()
    for path in ("/v1/live", "/v1/foxglove", "/v1/telemetry"):
        with pytest.raises(InvalidStatus) as e:
            with connect(_ws(api, path + "?token=wrong")):
                pass
        assert e.value.response.status_code == 403, path


def test_foxglove_without_its_server_says_how_to_start_it(beside):
    api, _ = beside(env={"NNOS_FOXGLOVE_PORT": str(free_port())})
    with connect(_ws(api, f"/v1/foxglove?token={api.token}"), subprotocols=FOXGLOVE) as ws:
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=scaled(10))
    assert e.value.rcvd.code == 1013 and "NNOS_FOXGLOVE=1" in e.value.rcvd.reason


@pytest.fixture
def foxglove_server(tmp_path):
    port = free_port()
    procs = []

    def start(run: str, hz: float):
        log = tmp_path / "foxglove.log"
        p = subprocess.Popen([sys.executable, "-m", "nnos.foxglove_server", "--run", run, "--port", str(port),
                              "--hz", str(hz)], cwd=ROOT, stderr=open(log, "w"))
        procs.append(p)
        wait_until(lambda: "foxglove: serving on 127.0.0.1" in log.read_text(), scaled(30), "the Foxglove server",
                   context=log.read_text)
        return p
    yield port, start
    for p in procs:
        p.terminate()
        p.wait(10)


def test_foxglove_live_through_the_token_with_declared_schemas_at_its_own_rate(beside, foxglove_server):
    port, start = foxglove_server
    api, live = beside(env={"NNOS_FOXGLOVE_PORT": str(port)})
    start(str(live.run), hz=10)
    with connect(_ws(api, f"/v1/foxglove?token={api.token}"), subprotocols=FOXGLOVE, max_size=None) as ws:
        _live_topics(FoxgloveClient(ws))


def _live_topics(c: FoxgloveClient) -> None:
    import jsonschema
    topics = {"/cartpole/cart", "/cartpole/pole", "/cartpole/force", "/loop", "/model", "/failsafe"}
    c.until_advertised(topics, scaled(15))
    assert c.info and c.info["name"]
    for ch in c.channels.values():
        assert ch["encoding"] == "json" and ch["schemaEncoding"] == "jsonschema"
    subs = c.subscribe_all()
    got = c.messages(3.0)
    by_topic: dict[str, list] = {}
    for sub, ts, payload in got:
        ch = subs[sub]
        msg = json.loads(payload)
        jsonschema.validate(msg, json.loads(ch["schema"]))            # the schema it declared
        by_topic.setdefault(ch["topic"], []).append((ts, msg))
    assert {"/cartpole/cart", "/cartpole/force", "/loop"} <= set(by_topic), sorted(by_topic)
    cart = by_topic["/cartpole/cart"][-1][1]
    assert cart["names"] == ["position", "velocity"] and cart["units"] == "m, m/s"
    assert by_topic["/loop"][-1][1]["mode"] in ("running", "probation")
    assert abs(by_topic["/loop"][-1][0] / 1e9 - time.time()) < 60, "timestamps are wall-clock nanoseconds"
    # the loop ticks at 50 Hz; the server publishes each topic at its own 10 Hz whatever the client asks
    assert len(by_topic["/loop"]) <= 10 * 3 * 1.5 + 2, len(by_topic["/loop"])
    ticks = [m["tick"] for _, m in by_topic["/loop"]]
    assert ticks == sorted(ticks) and ticks[-1] - ticks[0] >= 50, "the newest ticks, sampled"


def test_foxglove_server_follows_a_restarted_loop(beside, foxglove_server, tmp_path):
    """A loop that restarts makes new rings: the server notices and publishes from them."""
    from tests.support.live import Live
    port, start = foxglove_server
    api, live = beside(env={"NNOS_FOXGLOVE_PORT": str(port)})
    start(str(live.run), hz=20)
    with connect(_ws(api, f"/v1/foxglove?token={api.token}"), subprotocols=FOXGLOVE, max_size=None) as ws:
        c = FoxgloveClient(ws)
        c.until_advertised({"/loop"}, scaled(15))
        os.unlink(live.run / "channels")                            # the next loop's rings are new files
        (tmp_path / "again").mkdir()
        second = Live(tmp_path / "again", data=live.data)
        try:
            second.ticks(5)
            before = set(c.channels)
            wait_until(lambda: c.messages(0.2) is not None and set(c.channels) - before, scaled(15),
                       "the new rings advertised")
        finally:
            second.close()


def test_foxglove_shows_a_bound_camera_as_compressed_images(beside, foxglove_server):
    """A camera's frame ring (as the loop writes it) becomes a foxglove.CompressedImage topic:
    JPEG of the frame the loop read, encoded by the server's process while someone watches."""
    import base64
    import io
    import threading
    import numpy as np
    from PIL import Image
    from nnos.frames import FrameWriter
    from nnos_hardware.channels import SENSOR, Channel, Sample
    port, start = foxglove_server
    api, live = beside(env={"NNOS_FOXGLOVE_PORT": str(port)})
    sample = Sample(Channel("frame", SENSOR, (48, 64, 3), 0, 255, dtype=np.dtype(np.uint8)))
    frames = FrameWriter(str(live.run / "frames-cam-frame"), {"topic": "/cam/frame"}, sample)
    stop = threading.Event()

    def camera():                                     # a 20 Hz camera: a new frame, a tick that reads it
        k = 0
        while not stop.wait(0.05):
            sample.values[:] = np.uint8(k % 256)
            sample.values[:, :32, 0] = 255            # the left half red
            sample.count += 1
            sample.t_host = time.monotonic()
            frames.record(k)
            k += 1
    t = threading.Thread(target=camera, daemon=True)
    t.start()
    try:
        start(str(live.run), hz=20)
        with connect(_ws(api, f"/v1/foxglove?token={api.token}"), subprotocols=FOXGLOVE, max_size=None) as ws:
            c = FoxgloveClient(ws)
            c.until_advertised({"/cam/frame"}, scaled(15))
            cam = next(ch for ch in c.channels.values() if ch["topic"] == "/cam/frame")
            assert cam["schemaName"] == "foxglove.CompressedImage" and cam["encoding"] == "json"
            subs = c.subscribe_all()
            got = [json.loads(p) for s, _, p in c.messages(3.0) if subs[s]["topic"] == "/cam/frame"]
    finally:
        stop.set()
        t.join()
        frames.close()
    assert 3 <= len(got) <= 3 * 5 * 1.5 + 2, f"{len(got)} images in 3 s at the server's 5 Hz image rate"
    img = Image.open(io.BytesIO(base64.b64decode(got[-1]["data"])))
    assert got[-1]["format"] == "jpeg" and img.format == "JPEG" and img.size == (64, 48)
    px = np.asarray(img.convert("RGB"))
    assert px[:, :28, 0].mean() > 240 and px[:, 36:, 0].mean() < 250, "the frame the loop read"
