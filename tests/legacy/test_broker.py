"""The legacy VM's broker against hostile input: malformed, unknown, oversize and flood
messages, a guest that stops reading — over a real Unix socket pair; every request audited."""
from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time

import numpy as np
import pytest

from nnos.legacy.broker import OUT_MAX, Broker, Lines, RateLimit, serve
from nnos.legacy.messages import MAX_LINE, MessageError, parse
from nnos.telemetry import TelemetryWriter


def ask(broker, obj) -> dict:
    line = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return json.loads(broker.handle(line))


def audit(data) -> list[dict]:
    with open(os.path.join(data, "audit", "legacy-vm.jsonl")) as f:
        return [json.loads(x) for x in f]


def test_allow_list_and_schemas_refuse_with_what_was_expected():
    with pytest.raises(MessageError, match="unknown message type 'actuate'"):
        parse(b'{"id": 1, "type": "actuate", "channel": "force", "value": 10}')
    for line, code, text in ((b"not json", "malformed", "not JSON"), (b"[1, 2]", "malformed", "JSON object"),
                             (b'{"id": 1, "type": "log.post"}', "schema", "needs ['message']"),
                             (b'{"id": 1, "type": "status.get", "x": 1}', "schema", "unknown fields ['x']"),
                             (b'{"id": 1, "type": "telemetry.get", "window_s": 1e9}', "schema", "from 1 to 3600"),
                             (b'{"id": 1, "type": "model.propose", "name": "../x", "model_b64": "AA=="}', "schema", "name"),
                             (b'{"id": 1, "type": "model.propose", "name": "m", "model_b64": "%%%"}', "schema", "base64"),
                             (b'{"id": [1], "type": "status.get"}', "schema", "id must be")):
        with pytest.raises(MessageError, match=re.escape(text)) as e:
            parse(line)
        assert e.value.code == code
    assert parse(b'{"id": "a", "type": "telemetry.get"}') == ("a", "telemetry.get", {"window_s": 60.0})


def test_requests_answer_from_read_only_views_and_everything_is_audited(tmp_path):
    data = str(tmp_path)
    os.makedirs(os.path.join(data, "run"))
    tel = TelemetryWriter(os.path.join(data, "run", "telemetry"))
    tel.set("period_ns", 1_000_000)
    tel.set("mode", 1)                                   # running
    for i in range(500):
        tel.record(i, i * 1_000_000, 1000 * (i % 10), 0, 20_000, 0, 0, 0, np.zeros(0, np.float32), np.zeros(0, np.float32))
    tel.set("ticks", 500)
    b = Broker(data)
    st = ask(b, {"id": 1, "type": "status.get"})
    assert st["ok"]
    assert st["result"]["loop"]["mode"] == "running"
    assert st["result"]["loop"]["ticks"] == 500
    t = ask(b, {"id": 2, "type": "telemetry.get", "window_s": 1})
    assert t["ok"]
    assert t["result"]["ticks"] == 500
    assert t["result"]["lateness_us"]["p99"] == pytest.approx(9.0, abs=0.1)
    assert ask(b, {"id": 3, "type": "log.post", "level": "warning", "message": "upload\nfailed"})["ok"]
    with open(os.path.join(data, "logs", "legacy-vm-guest.log")) as f:
        assert f.read().endswith("warning: upload failed\n")
    refused = ask(b, {"id": 4, "type": "loop.stop"})
    assert refused == {"id": 4, "ok": False, "error": {"code": "unknown-type", "message": refused["error"]["message"]}}
    big = ask(b, json.dumps({"id": 5, "type": "log.post", "message": "x" * 10, "pad": "y" * MAX_LINE}).encode())
    assert big["error"]["code"] in ("schema", "too-large")
    rows = audit(data)
    assert [(r["id"], r["ok"]) for r in rows] == [(1, True), (2, True), (3, True), (4, False), (5, False)]
    assert rows[3]["code"] == "unknown-type"
    assert b.counters["refused"] == 2


POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "models", "cartpole", "cartpole.onnx")


def test_a_corrupt_proposal_is_refused(tmp_path):
    b = Broker(str(tmp_path))
    for blob, why in ((b"not a model at all", "not an ONNX model"), (b"PK\x03\x04" + bytes(100), "archive"),
                      (open(POLICY, "rb").read()[:-40], "not an ONNX model")):
        r = ask(b, {"id": 1, "type": "model.propose", "name": "m", "model_b64": base64.b64encode(blob).decode()})
        assert not r["ok"], r
        assert r["error"]["code"] == "bad-model", r
        assert why in r["error"]["message"], r
    assert not os.path.exists(os.path.join(str(tmp_path), "quarantine"))
    b.tally.flush(force=True)           # the first in full, the others as a count
    rows = audit(str(tmp_path))
    assert {x["code"] for x in rows} == {"bad-model"}
    assert sum(x.get("refused", 1) for x in rows) == 3


def test_a_proposal_only_lands_in_quarantine(tmp_path):
    b = Broker(str(tmp_path))
    model = open(POLICY, "rb").read()
    r = ask(b, {"id": 1, "type": "model.propose", "name": "policy-v2", "model_b64": base64.b64encode(model).decode()})
    assert r["ok"]
    assert r["result"]["state"] == "quarantined"
    q = os.path.join(str(tmp_path), "quarantine")
    assert open(os.path.join(q, r["result"]["id"] + ".model"), "rb").read() == model
    meta = json.load(open(os.path.join(q, r["result"]["id"] + ".json")))
    assert meta["name"] == "policy-v2"
    assert meta["signed"] is False
    assert meta["from"] == "legacy-vm"
    assert not os.path.exists(os.path.join(str(tmp_path), "models"))
    assert not os.path.exists( os.path.join(str(tmp_path), "state.json"))                          # the store is not touched
    assert audit(str(tmp_path))[-1]["model"] == r["result"]["id"]


def test_lines_are_bounded_and_an_over_long_one_is_reported_once():
    lines = Lines(cap=100)
    assert lines.feed(b'{"a": 1}\n{"b"') == [b'{"a": 1}']
    assert lines.feed(b"x" * 500) == [None]                  # over the cap: dropped, said once
    assert lines.feed(b"y" * 500) == []
    assert len(lines.buf) == 0
    assert lines.feed(b'tail\n{"c": 3}\n') == [b'{"c": 3}']  # resynchronised at the newline


def test_rate_limit_is_a_token_bucket():
    now = [0.0]
    r = RateLimit(rate=10, burst=5, clock=lambda: now[0])
    assert [r.allow() for _ in range(7)] == [True] * 5 + [False] * 2
    now[0] += 0.35
    assert [r.allow() for _ in range(4)] == [True] * 3 + [False]


def test_socket_flood_and_a_guest_that_stops_reading(tmp_path):
    b = Broker(str(tmp_path))
    guest, host = socket.socketpair()
    stop = threading.Event()
    th = threading.Thread(target=serve, args=(b, host, stop.is_set), daemon=True)
    th.start()
    try:
        guest.sendall(b'{"id": 1, "type": "status.get"}\n')
        guest.settimeout(5)
        assert json.loads(guest.recv(65536).split(b"\n")[0])["ok"]
        # a flood: the first burst is answered, the rest refused as rate-limited, none lost
        guest.sendall(b"".join(json.dumps({"id": i, "type": "status.get"}).encode() + b"\n" for i in range(2, 302)))
        got, buf = [], b""
        while len(got) < 300:
            buf += guest.recv(65536)
            *done, buf = buf.split(b"\n")
            got += [json.loads(x) for x in done if x]
        codes = [g["error"]["code"] for g in got if not g["ok"]]
        assert sum(g["ok"] for g in got) <= 45
        assert codes
        assert set(codes) == {"rate-limited"}
        # a guest that never reads: the broker keeps going and drops what does not fit
        big = json.dumps({"type": "log.post", "message": "m" * 1900}).encode() + b"\n"
        deadline = time.monotonic() + 10
        guest.setblocking(False)
        sent = 0
        while b.counters["dropped"] == 0 and time.monotonic() < deadline:
            try:
                sent += guest.send(b'{"type": "telemetry.get", "window_s": 3600}\n' * 200 + big)
            except BlockingIOError:
                time.sleep(0.01)
        assert b.counters["dropped"] > 0
        assert th.is_alive()
        assert b.counters["requests"] > OUT_MAX // 200
    finally:
        stop.set()
        th.join(5)
        guest.close()
        host.close()
    assert not th.is_alive()


def test_every_line_is_a_sign_of_life_published_for_the_watchdog(tmp_path):
    import time as _time

    from nnos.legacy.broker import publish
    b = Broker(str(tmp_path))
    assert b.last_request_ns == 0
    t0 = _time.monotonic_ns()
    assert ask(b, {"id": "heartbeat", "type": "ping"}) == {"id": "heartbeat", "ok": True, "result": {}}
    assert b.last_request_ns >= t0
    t1 = b.last_request_ns
    assert not ask(b, {"id": 2, "type": "actuate"})["ok"]                    # refused, but alive
    assert b.last_request_ns > t1
    publish(b, str(tmp_path / "broker.json"), True)
    assert json.load(open(tmp_path / "broker.json"))["last_request_ns"] == b.last_request_ns


def test_a_flood_cannot_rotate_the_audit_trail_away(tmp_path):
    """Rate-limited messages are audited as counts (one line a second), so what came before a
    flood stays in the audit however long the flood."""
    now = [0.0]
    b = Broker(str(tmp_path), clock=lambda: now[0])
    assert not ask(b, {"id": 1, "type": "actuate"})["ok"]               # the one that matters
    for i in range(20000):                                              # 200 s of flooding
        now[0] += 0.01
        b.handle(json.dumps({"id": i, "type": "status.get"}).encode())
    b.flush_flood()
    lines = audit(str(tmp_path))
    assert lines[0]["code"] == "unknown-type"                            # still there, first
    floods = [x for x in lines if x.get("code") == "rate-limited"]
    assert 150 <= len(floods) <= 260                                   # a line a second, not 16 000
    answered = sum(x["ok"] for x in lines)
    assert sum(x["refused"] for x in floods) + answered + 1 == 20001   # every message accounted for


def _crafted_plan() -> bytes:
    """A plan file whose checksum is right but whose header is not what a plan holds."""
    import hashlib
    import struct

    from nnos.plan.artifact import MAGIC
    header = json.dumps({"weights": [1, 2, 3], "format": 999}).encode()
    body = MAGIC + struct.pack("<I", len(header)) + header
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("line", [
    b'{"id": 1, "type": []}',                                   # TypeError in `kind not in TYPES`
    b'{"id": 1, "type": {"a": 1}}',
    b"[" * 100_000 + b"]" * 100_000,                            # RecursionError in json.loads
    b'{"id": 1, "type": "status.get", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
])
def test_lines_that_killed_the_broker_are_refused_and_audited(tmp_path, line):
    # regression (hardening): each of these escaped handle() and ended the broker process
    b = Broker(str(tmp_path))
    reply = json.loads(b.handle(line))
    assert reply["ok"] is False
    assert reply["error"]["code"] in ("unknown-type", "malformed", "schema")
    assert audit(str(tmp_path))[-1]["ok"] is False
    assert ask(b, {"id": 9, "type": "ping"})["ok"]                   # and it still answers


def test_a_crafted_plan_proposal_is_refused(tmp_path):
    b = Broker(str(tmp_path))
    model = base64.b64encode(_crafted_plan()).decode()
    reply = ask(b, {"id": 3, "type": "model.propose", "name": "m", "model_b64": model})
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] in ("bad-model", "internal"), reply
    assert audit(str(tmp_path))[-1]["ok"] is False


def _random_json(rng, depth=0):
    pick = rng.integers(0, 9 if depth < 6 else 5)
    if pick == 0:
        return None
    if pick == 1:
        return bool(rng.integers(0, 2))
    if pick == 2:
        return int(rng.integers(-2**63, 2**63 - 1, dtype=np.int64)) * int(rng.choice([1, 10**30]))
    if pick == 3:
        return float(rng.choice([0.5, -1e308, 1e308, float("nan"), float("inf")]))
    if pick == 4:
        words = ["status.get", "telemetry.get", "log.post", "model.propose", "ping", "", "\u0000", "é" * 70,
                 "x" * 5000, "AA==", "%%%", "../../etc"]
        return str(rng.choice(words))
    if pick in (5, 6):
        keys = ["id", "type", "window_s", "message", "level", "name", "model_b64", "signature_b64", "note", "x"]
        return {str(rng.choice(keys)): _random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 6)))}
    return [_random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))]


def test_fuzz_handle_never_raises(tmp_path):
    """10 000 random JSON shapes and byte strings (seeded): every one answered with one JSON line
    (an answer or a refusal); the broker never raises."""
    rng = np.random.default_rng(20261203)
    now = [0.0]
    b = Broker(str(tmp_path), clock=lambda: now[0])
    for i in range(10_000):
        now[0] += 0.06                                          # under the rate limit
        kind = i % 4
        if kind == 0:
            line = rng.bytes(int(rng.integers(0, 300)))
        elif kind == 1:
            obj = _random_json(rng)
            if isinstance(obj, dict) and rng.integers(0, 2):
                obj["type"] = _random_json(rng, 5) if rng.integers(0, 3) == 0 else str(rng.choice(
                    ["status.get", "telemetry.get", "log.post", "model.propose", "ping"]))
            line = json.dumps(obj, allow_nan=True).encode()
        elif kind == 2:
            line = b"[" * int(rng.integers(1, 200_000))
        else:
            line = json.dumps({"id": i, "type": "model.propose", "name": "m",
                               "model_b64": base64.b64encode(rng.bytes(int(rng.integers(0, 600)))).decode()}).encode()
        reply = b.handle(line.replace(b"\n", b" ") or None)
        assert reply.endswith(b"\n")
        assert reply.count(b"\n") == 1
        assert isinstance(json.loads(reply)["ok"], bool)
    assert b.counters["requests"] == 10_000


def test_refusals_at_the_allowed_rate_cannot_rotate_the_audit_away(tmp_path):
    """A guest refusing at its allowed rate for 10 minutes (12 000 refusals): the first entry is
    still in the audit, every refusal is accounted for, and the file stays small."""
    now = [0.0]
    b = Broker(str(tmp_path), clock=lambda: now[0])
    assert ask(b, {"id": 0, "type": "ping"})["ok"]                       # the one that matters
    codes = [{"id": 1, "type": "actuate"}, b"not json", {"id": 1, "type": "log.post"}]
    for i in range(12_000):
        now[0] += 0.05                                                  # 20 a second: the allowed rate
        c = codes[i % 3]
        b.handle(c if isinstance(c, bytes) else json.dumps(c).encode())
    b.tally.flush(force=True)
    lines = audit(str(tmp_path))
    assert lines[0]["type"] == "ping"
    assert lines[0]["ok"]
    assert not os.path.exists(os.path.join(str(tmp_path), "audit", "legacy-vm.jsonl.1"))
    assert os.path.getsize(os.path.join(str(tmp_path), "audit", "legacy-vm.jsonl")) < 200_000
    counted = sum(x.get("refused", 1) for x in lines if not x["ok"])
    assert counted == 12_000
