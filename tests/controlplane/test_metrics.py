"""/metrics as Prometheus scrapes it from a real control plane: who the device is (a stable id
from its data partition), the last update, the data partition's room and the clock; the
read-only scrape token opens /metrics and nothing else; NNOS_SCRAPE_FROM limits the addresses
it answers (the API token does not bypass it)."""
from __future__ import annotations

import os
import re
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
    finally:
        a.stop()


def test_the_device_id_is_made_once_and_a_damaged_one_replaced(tmp_path):
    first = device_id(str(tmp_path))
    assert device_id(str(tmp_path)) == first and re.fullmatch(r"[0-9a-f]{32}", first)
    (tmp_path / "machine-id").write_text("garbage\n")
    second = device_id(str(tmp_path))
    assert second != first and device_id(str(tmp_path)) == second
    assert sorted(os.listdir(tmp_path)) == ["machine-id"]                      # no temporary left
