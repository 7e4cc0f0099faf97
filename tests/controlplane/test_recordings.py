"""POST/GET/DELETE /v1/recordings on a real uvicorn beside a loop that ticks (in this process,
its rings in the same data directory): start, list, download a valid MCAP, delete; one at a
time; the quota; ids that are not ids."""
from __future__ import annotations

import io

import pytest

from tests.support.timing import scaled, wait_until

mcap_reader = pytest.importorskip("mcap.reader")


def test_record_list_download_delete(beside):
    api, live = beside()
    c = api.client
    long = c.post("/v1/recordings", json={"seconds": 600}).json()["id"]           # one that is still going
    assert c.post("/v1/recordings", json={"seconds": 1.0}).status_code == 409, "one at a time"
    assert c.get(f"/v1/recordings/{long}").status_code == 409, "not while it is being made"
    assert c.delete(f"/v1/recordings/{long}").status_code == 204, "stopped and removed"
    assert long not in [x["id"] for x in c.get("/v1/recordings").json()["recordings"]]
    r = c.post("/v1/recordings", json={"seconds": 1.0, "channels": ["/cartpole/force"]})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    done = wait_until(lambda: next((x for x in c.get("/v1/recordings").json()["recordings"]
                                    if x["id"] == rid and x["state"] == "done"), None), scaled(30), "the recording done")
    assert done["end"] == "done" and done["ticks"] >= 20 and done["bytes"] > 0
    body = c.get(f"/v1/recordings/{rid}").content
    topics = {ch.topic for _, ch, _ in mcap_reader.make_reader(io.BytesIO(body)).iter_messages()}
    assert topics == {"/cartpole/force", "/loop", "/model", "/failsafe"}
    assert c.delete(f"/v1/recordings/{rid}").status_code == 204
    assert c.get(f"/v1/recordings/{rid}").status_code == 404
    assert c.get("/v1/recordings/..%2F..%2Ftoken").status_code == 404
    r = c.post("/v1/recordings", json={"seconds": 1, "channels": ["/cartpole/nope"]})
    assert r.status_code == 202
    wait_until(lambda: all(x["state"] == "done" for x in c.get("/v1/recordings").json()["recordings"]), scaled(30),
               "the bad one to end")
    bad = c.get("/v1/recordings").json()["recordings"][-1]
    assert bad["end"] == "failed" and "no such channel" in bad["error"]
    assert c.post("/v1/recordings", json={"seconds": -1}).status_code == 422


def test_the_quota_refuses_a_start_and_ends_a_recording(beside):
    api, live = beside(env={"NNOS_RECORDINGS_MAX_MB": "1.2"})
    c = api.client
    rid = c.post("/v1/recordings", json={"seconds": 3600}).json()["id"]
    done = wait_until(lambda: next((x for x in c.get("/v1/recordings").json()["recordings"]
                                    if x["id"] == rid and x["state"] == "done"), None), scaled(120), "the quota to end it")
    assert done["end"] == "quota" and done["bytes"] <= 1.2e6
    r = c.post("/v1/recordings", json={"seconds": 1})
    assert r.status_code == 507 and "NNOS_RECORDINGS_MAX_MB" in r.json()["detail"]
