"""The model store under crashes, and telemetry read from another process."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import nnos
from nnos.store import ModelStore, StoreError
from nnos.telemetry import TelemetryReader, TelemetryWriter
from nnos.timing import RateKeeper, now_ns
from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def plans(zoo):
    return [nnos.compile(zoo["mlp_s"], check=False).to_bytes(), nnos.compile(zoo["gru_s"], check=False).to_bytes()]


def test_put_activate_rollback_delete(tmp_path, plans):
    s = ModelStore(str(tmp_path))
    a, b = s.put(plans[0], {"note": "a"}), s.put(plans[1])
    assert s.put(plans[0]) == a
    assert s.ids() == sorted([a, b])
    assert s.report(a) == {"note": "a"}
    s.activate(a)
    s.activate(b, "newer")
    st = s.state()
    assert (st["active"], st["previous"]) == (b, a)
    assert st["history"][-1]["reason"] == "newer"
    s.rollback("bad")
    assert s.state()["active"] == a
    with pytest.raises(StoreError, match="is active"):
        s.delete(a)
    s.delete(b)
    assert s.ids() == [a]
    assert s.state()["previous"] is None
    with pytest.raises(StoreError, match="not a model id"):
        s.load("../../etc/passwd")
    with pytest.raises(nnos.PlanFormatError):
        s.put(b"not a plan")


WRITER = r"""
import sys, random
sys.path.insert(0, sys.argv[2])
from nnos.store import ModelStore
s = ModelStore(sys.argv[1])
plans = [open(p, "rb").read() for p in sys.argv[3:]]
random.seed(int.from_bytes(open("/dev/urandom", "rb").read(4), "little"))
print("ready", flush=True)
while True:
    data = bytearray(random.choice(plans))
    mid = s.put(bytes(data), {"n": random.random()})
    s.activate(mid, "churn")
"""


def test_kill_9_at_random_points_leaves_a_loadable_store(tmp_path, plans, zoo):
    d = str(tmp_path / "data")
    files = []
    for i, p in enumerate(plans + [nnos.compile(zoo["cnn_s"], check=False).to_bytes()]):
        f = tmp_path / f"p{i}.nnos"
        f.write_bytes(p)
        files.append(str(f))
    rng = random.Random(1)
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, d, ROOT, *files], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        s = ModelStore(d)                       # what a restart after a power cut sees
        s.clean()                               # the supervisor's clean at start
        st = s.state()
        for mid in filter(None, (st["active"], st["previous"])):
            s.load(mid)                         # never a torn plan
        for mid in s.ids():
            s.load(mid)
        assert not [n for n in os.listdir(s.models) if n.startswith(".tmp-")]   # temp files cleaned


def test_telemetry_is_read_by_another_process_while_written(tmp_path):
    path = str(tmp_path / "tel")
    w = TelemetryWriter(path, capacity=256)
    reader = subprocess.Popen([sys.executable, "-c", f"""
import sys, time, json; sys.path.insert(0, {ROOT!r})
from nnos.telemetry import TelemetryReader
r = TelemetryReader({path!r}); seen = set(); bad = 0
t_end = time.monotonic() + 1.5
while time.monotonic() < t_end:
    recs = r.records(200)
    for x in recs:
        if not (x["inputs"][0] == x["tick"] and x["outputs"][0] == -float(x["tick"])):
            bad += 1
        seen.add(int(x["tick"]))
print(json.dumps({{"seen": len(seen), "bad": bad, "ticks": r.counters()["ticks"]}}))
"""], stdout=subprocess.PIPE)
    x = np.zeros(4, np.float32)
    y = np.zeros(2, np.float32)
    t_end = time.monotonic() + 1.2
    tick = 0
    while time.monotonic() < t_end:
        x[0], y[0] = tick, -tick
        w.record(tick, now_ns(), 0, 1, 2, 3, 1, 0, x, y)
        w.add("ticks")
        tick += 1
    out = json.loads(proc_out(reader))
    w.close()
    assert out["bad"] == 0
    assert out["seen"] > 100
    assert out["ticks"] == tick


def proc_out(p):
    return p.communicate(timeout=10)[0].decode().strip().splitlines()[-1]


def test_torn_record_is_dropped(tmp_path):
    w = TelemetryWriter(str(tmp_path / "tel"), capacity=8)
    for t in range(5):
        w.record(t, 0, 0, 0, 0, 0, 1, 0, np.zeros(1, np.float32), np.zeros(1, np.float32))
    w._seq[3] += 1                               # as if the writer were mid-way through tick 3
    r = TelemetryReader(w.path)
    assert [int(x) for x in r.records(8)["tick"]] == [0, 1, 2, 4]
    r.close()
    w.close()


def test_rate_keeper_holds_the_rate_and_counts_misses():
    k = RateKeeper(1000)
    late = [k.wait() for _ in range(200)]
    assert k.ticks == 200
    assert np.percentile(late, 50) < 1_000_000
    time.sleep(0.0035)                           # a stall of 3.5 periods
    k.wait()
    assert k.misses >= 2
    # no burst of catch-up ticks: the next waits sleep to the grid again (a catch-up burst would
    # return at once, late by whole periods, several times in a row; one VM stall may make one late)
    after = [k.wait() for _ in range(5)]
    assert sum(x >= k.period for x in after) <= 1, after


OPENER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from nnos.store import ModelStore
print("ready", flush=True)
while True:
    ModelStore(sys.argv[1]).state()      # what the broker does on every guest status.get
"""


def test_opening_a_store_never_breaks_another_process_writes(tmp_path, plans):
    # regression (hardening): ModelStore() removed every temp file, including those another
    # process was writing: with the broker opening the store in a loop, 77 of 100 puts failed
    d = str(tmp_path / "data")
    ModelStore(d)
    opener = subprocess.Popen([sys.executable, "-c", OPENER, d, ROOT], stdout=subprocess.PIPE)
    try:
        assert opener.stdout.readline().strip() == b"ready"
        s = ModelStore(d)
        for i in range(100):
            s.put(plans[i % len(plans)], {"n": i})            # raises FileNotFoundError on the old code
    finally:
        opener.kill()
        opener.wait()


def test_only_temp_files_of_dead_writers_are_cleaned(tmp_path):
    s = ModelStore(str(tmp_path / "data"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = os.path.join(s.models, f".tmp-{os.getpid()}-abc")
    theirs = os.path.join(s.models, f".tmp-{dead.pid}-abc")
    for p in (mine, theirs):
        open(p, "wb").close()
    assert s.clean() == 1
    assert os.path.exists(mine)
    assert not os.path.exists(theirs)
