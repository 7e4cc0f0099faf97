"""/metrics as Prometheus scrapes it from a real control plane: who the device is (a stable id
from its data partition), the last update, the data partition's room and the clock; the
read-only scrape token opens /metrics and nothing else; NNOS_SCRAPE_FROM limits the addresses
it answers (the API token does not bypass it)."""
from __future__ import annotations

import os
import re
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nnos.update import record
from nnos.identity import device_id
from tests.support.api import Api


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def one(got: dict, name: str) -> tuple[dict, float]:
    [(labels, value)] = [(dict(k[1]), v) for k, v in got.items() if k[0] == name]
    return labels, value


def test_who_the_device_is_its_update_its_room_and_its_clock(api):
    scrape = open(os.path.join(api.data, "scrape_token")).read().strip()
    assert scrape.startswith("nnos_scrape_") and scrape != api.token
    assert oct(os.stat(os.path.join(api.data, "scrape_token")).st_mode & 0o777) == "0o600"
    r = httpx.get(api.url + "/metrics", headers={"Authorization": f"Bearer {scrape}"}, timeout=30)
    assert r.status_code == 200, r.text
    got = samples(r.text)
    info, value = one(got, "nnos_device_info")
    assert value == 1 and re.fullmatch(r"[0-9a-f]{32}", info["device_id"]), info
    assert info["device_id"] == open(os.path.join(api.data, "machine-id")).read().strip() == device_id(api.data)
    assert info["board"] == "cartpole-sim" and info["version"], info
    assert info["hostname"] == socket.gethostname(), info          # on the image: the boot partition's hostname
    assert one(got, "nnos_update_rolled_back")[1] == 0
    size, free = one(got, "nnos_data_size_bytes")[1], one(got, "nnos_data_free_bytes")[1]
    assert 0 < free <= size
    assert abs(one(got, "nnos_clock_seconds")[1] - time.time()) < 60
    # an update rolled back (the record the health gate leaves): a metric an alert fires on
    record.save(api.data, {"state": "rolled back", "why": "slot B did not come up healthy", "from": {}, "to": {}})
    try:
        again = samples(api.client.get("/metrics").text)
        assert one(again, "nnos_update_rolled_back")[1] == 1
        assert one(again, "nnos_device_info")[0]["device_id"] == info["device_id"]          # stable
    finally:
        os.unlink(record.path(api.data))


def test_the_scrape_token_opens_metrics_alone(api):
    scrape = open(os.path.join(api.data, "scrape_token")).read().strip()
    bare = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {scrape}"}, timeout=30)
    for method, path in (("GET", "/v1/status"), ("GET", "/v1/models"), ("POST", "/v1/models"),
                         ("POST", "/v1/system/update"), ("POST", "/metrics")):
        r = bare.request(method, path, content=b"\0" * 1024 if method == "POST" else None)
        assert r.status_code in (401, 405), (method, path, r.status_code, r.text)
        assert r.status_code == 401 or path == "/metrics", (method, path, r.text)
    assert httpx.get(api.url + "/metrics", timeout=30).status_code == 401                  # no token at all


@pytest.mark.parametrize("ranges, answered", [("10.0.0.0/8, fd00::/8", False), ("10.0.0.0/8,127.0.0.0/8", True)])
def test_scrapes_only_from_the_ranges_the_device_is_told(tmp_path, ranges, answered):
    a = Api(tmp_path / "api", env={"NNOS_SCRAPE_FROM": ranges})
    try:
        r = a.client.get("/metrics")                                  # the API token does not bypass it
        if answered:
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 403, r.text
            assert r.json()["detail"] == ("scrapes are answered from 10.0.0.0/8, fd00::/8 only (NNOS_SCRAPE_FROM); "
                                          "127.0.0.1 is not in it"), r.text
            assert a.client.get("/v1/status").status_code == 200      # the rest of the API is not limited
            # without a token: 401, and the ranges are not told
            bare = httpx.get(a.url + "/metrics", timeout=30)
            assert bare.status_code == 401 and "10.0.0.0" not in bare.text, bare.text
    finally:
        a.stop()


def test_the_device_id_is_made_once_and_a_damaged_one_replaced(tmp_path):
    first = device_id(str(tmp_path))
    assert device_id(str(tmp_path)) == first and re.fullmatch(r"[0-9a-f]{32}", first)
    (tmp_path / "machine-id").write_text("garbage\n")
    second = device_id(str(tmp_path))
    assert second != first and device_id(str(tmp_path)) == second
    assert sorted(os.listdir(tmp_path)) == ["machine-id"]                      # no temporary left


def test_the_fleet_sets_the_scrape_token_over_the_api(api):
    """PUT /v1/system/scrape-token (the API token): the new token opens /metrics at once, the old
    one no longer does; the file keeps it (mode 0600); setting it again changes nothing; GET says
    its sha256, never the token."""
    import hashlib
    old = open(os.path.join(api.data, "scrape_token")).read().strip()
    new = "nnos_scrape_fleet-" + "x" * 24
    r = api.client.put("/v1/system/scrape-token", json={"token": new})
    assert r.status_code == 200 and r.json() == {"set": True, "sha256": hashlib.sha256(new.encode()).hexdigest(),
                                                 "changed": True}, r.text
    assert api.client.put("/v1/system/scrape-token", json={"token": new}).json()["changed"] is False
    assert new not in api.client.get("/v1/system/scrape-token").text
    assert api.client.get("/v1/system/scrape-token").json()["sha256"] == hashlib.sha256(new.encode()).hexdigest()
    assert open(os.path.join(api.data, "scrape_token")).read().strip() == new
    assert oct(os.stat(os.path.join(api.data, "scrape_token")).st_mode & 0o777) == "0o600"
    scrape = lambda tok: httpx.get(api.url + "/metrics", headers={"Authorization": f"Bearer {tok}"}, timeout=30)  # noqa: E731
    assert scrape(new).status_code == 200 and scrape(old).status_code == 401
    # it opens nothing else, and only the API token may set it
    r = httpx.put(api.url + "/v1/system/scrape-token", json={"token": "nnos_scrape_" + "y" * 30},
                  headers={"Authorization": f"Bearer {new}"}, timeout=30)
    assert r.status_code == 401, r.text


@pytest.mark.parametrize("body, why", [({"token": "short"}, "at least 24"),
                                       ({"token": "nnos scrape " + "z" * 24}, "bearer token"),
                                       ({"token": "nnos_scrape_" + "\u00e9" * 24}, "bearer token"), ({}, "token"),
                                       ("API", "differ from the API token")])
def test_a_bad_scrape_token_is_refused_and_the_old_one_kept(api, body, why):
    before = open(os.path.join(api.data, "scrape_token")).read()
    r = api.client.put("/v1/system/scrape-token", json={"token": api.token} if body == "API" else body)
    assert r.status_code == 422 and why in r.text, r.text
    assert open(os.path.join(api.data, "scrape_token")).read() == before
