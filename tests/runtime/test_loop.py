"""The loop in-process: allocation-free ticks, failsafe rules, admission, swaps, probation,
shadow runs and start-up fallbacks."""
from __future__ import annotations

import os
import threading
import time
import tracemalloc

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from nnos.runtime.control import ControlServer, request
from nnos.runtime.loop import Loop, LoopConfig
from nnos.store import ModelStore
from nnos.telemetry import TelemetryReader, TelemetryWriter
from tests.support.policies import board_at, policy_variant, store_model
from tests.support.timing import report_retry, retried, scaled, wait_until


def test_ticks_drive_the_actuator_from_the_policy(rig):
    r = rig()
    r.ticks(5)
    assert not r.loop.safety.active
    assert r.force > 0.5          # pole leaning right: push right
    r.state[2] = -0.02
    r.ticks(1)
    assert r.force < -0.5
    assert r.tel.c[r.tel.idx["ticks"]] == 6


def test_hot_path_allocates_nothing_over_10000_ticks(rig):
    r = rig()
    r.dev.sent = __import__("collections").deque(maxlen=0)      # keep no copies of what was sent
    r.ticks(50)
    cart, pole = r.dev.samples["cart"], r.dev.samples["pole"]
    tracemalloc.start()
    r.loop.tick()
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _ in range(10_000):
        cart.t_host = pole.t_host = time.monotonic()          # fresh readings, values updated in place
        r.loop.tick()
    now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert not r.loop.safety.active
    assert r.dev.flushes > 10_000
    assert now - start < 1024, f"memory grew by {now - start} bytes over 10 000 ticks"
    assert peak - start < 4096, f"{peak - start} bytes held at once within a tick"


def test_stale_sensor_trips_failsafe_and_auto_recovers(rig):
    r = rig(failsafe="exit = \"auto\"\ngood_ticks = 5")
    r.ticks(3)
    r.dev.samples["pole"].t_host -= 1.0                          # 1 s old: stale (limit 100 ms)
    r.dev.samples["cart"].t_host -= 1.0
    r.loop.tick()
    assert r.loop.safety.active
    assert "stale" in r.loop.safety.reason
    assert r.force == 0.0
    r.ticks(4)
    assert r.loop.safety.active                                  # 4 good ticks: not yet
    r.ticks(1)
    assert not r.loop.safety.active
    assert r.force != 0.0
    assert r.tel.c[r.tel.idx["failsafe_entries"]] == 1


def test_manual_exit_waits_for_a_request(rig):
    r = rig(failsafe='exit = "manual"')
    r.dev.samples["pole"].t_host = 0.0
    r.loop.tick()
    assert r.loop.safety.active
    r.ticks(100)
    assert r.loop.safety.active
    assert r.force == 0.0
    assert r.loop.handle({"cmd": "release"}, None)["ok"]
    r.ticks(1)
    assert not r.loop.safety.active


def test_nan_model_never_reaches_the_actuator(rig, tmp_path):
    r = rig(active=False)
    mid = store_model(r.store, policy_variant(tmp_path, "nan", nan=True))
    r.store.activate(mid)
    r.loop.load_initial()
    r.ticks(3)
    assert r.loop.safety.active
    assert "NaN" in r.loop.safety.reason
    assert r.force == 0.0


def test_no_model_idles_in_failsafe(rig):
    r = rig(active=False)
    r.ticks(3)
    assert r.loop.safety.active
    assert r.loop.safety.reason == "no model to run"
    assert r.force == 0.0


def test_overrun_streak_trips_failsafe(rig):
    r = rig(budget=1e-6, failsafe="overrun_streak = 3")      # a budget no tick can meet
    r.ticks(2)
    assert not r.loop.safety.active
    r.ticks(1)
    assert r.loop.safety.active
    assert "3 overruns in a row" in r.loop.safety.reason


def test_lost_device_trips_failsafe(rig):
    r = rig()
    r.ticks(2)

    def boom(timeout=0.0):
        from nnos_hardware.errors import TransportError
        raise TransportError("cartpole", "unplugged")
    r.dev.poll = boom
    r.loop.tick()
    assert r.loop.safety.active
    assert "device cartpole lost" in r.loop.safety.reason


def _serve(r, tmp_path, seconds, realtime=False):
    server = ControlServer(str(tmp_path / "run" / "loop.sock"))
    r.live()
    r.loop.stop = False

    def run():
        if realtime:     # as in the loop process: this thread alone gets SCHED_FIFO
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
            except PermissionError:
                pass
        r.loop.run(server, seconds)
    t = threading.Thread(target=run)
    t.start()
    return server, t


def _ask(r, tmp_path, msg, after=0.0, timeout=60.0):
    """Run the loop until one request is answered (and ``after`` seconds more); returns the
    answer. The loop's own pace decides how long that takes: the slow model's compile in its
    slack, with an empty cache on a loaded 2-core machine, ran past a fixed 4 s window in a
    clean-clone run."""
    server, t = _serve(r, tmp_path, timeout)
    try:
        reply = request(server.path, msg, timeout=timeout)
        time.sleep(after)
    finally:
        r.loop.stop = True
        t.join()
        server.close()
    return reply


def test_admission_refuses_a_slow_model_with_figures(rig, tmp_path):
    r = rig(rate_hz=1000, budget=0.2)                          # budget 200 µs
    # 60 products by 512 × 512 weights: 63 MB read a call, past any CPU's caches (p50 1.1 ms on
    # a Zen 5). At 256 × 256 (15.7 MB) its 32 MiB L3 held them: p50 155 µs, p99.9 235 µs, at
    # times under the budget — admitted, then rolled back (CI failed so)
    slow = store_model(r.store, policy_variant(tmp_path, "slow", slow=60, width=512))
    reply = _ask(r, tmp_path, {"cmd": "activate", "model": slow, "id": 1})
    assert not reply["ok"]
    assert reply["outcome"] == "refused"
    assert "p99.9" in reply["reason"]
    assert "budget 200.0 µs" in reply["reason"]
    assert reply["latency"]["runs"] >= 1000


def test_admission_refuses_a_model_that_does_not_fit_the_board(rig, tmp_path, zoo):
    r = rig()
    other = store_model(r.store, zoo["mlp_s"])                 # obs is [1, 8]: the board gives 4 values
    reply = _ask(r, tmp_path, {"cmd": "activate", "model": other, "id": 2})
    assert not reply["ok"]
    assert "float32[1, 8], but its channels give 4 float32 values" in reply["reason"]


SWAPPER = r"""
import sys, json
sys.path.insert(0, sys.argv[1])
from nnos.runtime.control import request
sock, a, b = sys.argv[2:5]
out, retries = [], 0
for i in range(50):
    for attempt in range(6):
        reply = request(sock, {"cmd": "activate", "model": b if i % 2 == 0 else a, "id": i * 10 + attempt,
                               "runs": 1000, "probation_s": 0.02}, timeout=20)
        # a stall of this VM during probation (a tick over budget) is rolled back, as it must
        # be; that swap is asked again. Anything else is a failure.
        if reply["ok"] or not str(reply.get("reason", "")).startswith("overrun"):
            break
        retries += 1
    out.append(reply["outcome"] if reply["ok"] else reply["outcome"] + ": " + str(reply["reason"]))
request(sock, {"cmd": "stop", "id": 999}, timeout=5)
print(json.dumps({"outcomes": out, "retries": retries}))
"""


@pytest.mark.xdist_group("system")      # not beside another SCHED_FIFO loop (tests/system)
def test_fifty_hitless_swaps_at_500_hz(rig, tmp_path):
    """The loop runs in this thread, alone with the GIL (as in its own process); the requests
    come from another process."""
    import subprocess
    import sys
    from tests.support.paths import ROOT
    r = rig(rate_hz=500, probation_s=0.02)
    a = r.store.state()["active"]
    b = store_model(r.store, policy_variant(tmp_path, "b", scale=0.9))
    server = ControlServer(str(tmp_path / "run" / "loop.sock"))
    r.live()
    client = subprocess.Popen([sys.executable, "-c", SWAPPER, ROOT, server.path, a, b], stdout=subprocess.PIPE)
    policy = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        except PermissionError:
            pass
        r.loop.run(server, 60.0)
    finally:
        os.sched_setscheduler(0, policy[0], policy[1])
        server.close()
    result = __import__("json").loads(client.communicate(timeout=30)[0])
    outcomes, retries = result["outcomes"], result["retries"]
    for _ in range(retries):
        report_retry("test_fifty_hitless_swaps_at_500_hz", "a host stall in probation was rolled back; asked again")
    assert outcomes == ["active"] * 50, [x for x in outcomes if x != "active"]
    assert retries <= 12                      # host stalls in probation, rolled back and asked again (reported)
    reader = TelemetryReader(r.tel.path)
    recs = reader.records(16000)
    c = reader.counters()
    reader.close()
    assert c["swaps"] == 50 + retries
    assert c["rollbacks"] == retries
    gen = recs["model"].astype(int)
    swap_idx = np.nonzero(np.diff(gen))[0] + 1
    assert len(swap_idx) >= 45                                  # the ring holds most of the run
    period = 2_000_000
    work = recs["read_ns"] + recs["compute_ns"] + recs["write_ns"]
    # Hitless: a swap tick is no slower, and the ticks after it no later, than this host's own
    # ticks elsewhere in the run. Each is judged against the run's baseline (a firecracker VM
    # stalls ticks by milliseconds now and then, with or without swaps), and what the baseline
    # excuses is reported as a host stall.
    near = np.zeros(len(work), bool)
    for i in swap_idx:
        near[max(0, i - 1):i + 4] = True
    lateness = recs["lateness_ns"]
    base_slow = float(np.mean(work[~near] >= period // 4)) if (~near).any() else 0.0
    base_late = float(np.mean(lateness[~near] >= period)) if (~near).any() else 0.0
    slow = [int(work[i]) for i in swap_idx if work[i] >= period // 4]
    late = [int(lateness[i + 1:i + 3].max()) for i in swap_idx if lateness[i + 1:i + 3].max() >= period]
    for what, got, rate in (("swap tick took", slow, base_slow), ("tick after a swap was late by", late, base_late)):
        allowed = 2 + 3 * rate * len(swap_idx) * (1 if what.startswith("swap") else 2)
        for ns in got:
            report_retry("test_fifty_hitless_swaps_at_500_hz", f"a {what} {ns / 1000:.0f} µs (host stall)")
        assert len(got) <= allowed, (f"{len(got)} of {len(swap_idx)} swaps: {what} {[ns // 1000 for ns in got]} µs; "
                                     f"this host's other ticks: {rate:.1%}")
    assert np.median(work[swap_idx]) < period // 8, f"median swap tick {np.median(work[swap_idx]) / 1000:.0f} µs"
    for i in swap_idx:
        assert recs["tick"][i + 2] == recs["tick"][i] + 2, "the tick counter skipped after a swap"


def test_probation_rolls_back_a_nan_model(rig, tmp_path):
    r = rig(rate_hz=200, probation_s=0.5)
    good = r.store.state()["active"]
    bad = store_model(r.store, policy_variant(tmp_path, "nan", nan=True))
    reply = _ask(r, tmp_path, {"cmd": "activate", "model": bad, "id": 7})
    assert not reply["ok"]
    assert reply["outcome"] == "rolled back"
    assert "NaN" in reply["reason"]
    assert r.store.state()["active"] == good
    assert r.loop.active.id == good
    assert r.tel.c[r.tel.idx["rollbacks"]] == 1
    assert np.isfinite(r.force)
    sent = [cmd["force"][0] for _, cmd in r.dev.sent]
    assert np.all(np.isfinite(sent))                           # NaN never reached the actuator


def test_shadow_reports_divergence_without_actuating(rig, tmp_path):
    r = rig(rate_hz=200)
    b = store_model(r.store, policy_variant(tmp_path, "b", scale=0.5))
    reply = _ask(r, tmp_path, {"cmd": "shadow", "model": b, "id": 3}, after=0.5)
    assert reply["ok"]
    reader = TelemetryReader(r.tel.path)
    div, c = reader.shadow_divergence(), reader.counters()
    reader.close()
    assert c["shadow_ticks"] > 20
    assert c["shadow"] == b
    assert c["active"] != b
    # the shadow's action is half the active one's: divergence = |a|/2, and actuators follow the active
    assert div["max"][0] > 0.05
    assert div["mean"][0] > 0
    last_active_force = r.force
    assert abs(last_active_force) > 2 * div["mean"][0] * 10 * 0.5


def test_startup_falls_back_to_previous_when_active_is_corrupt(rig, tmp_path):
    r = rig(active=False)
    good = store_model(r.store, r.board.model)
    newer = store_model(r.store, policy_variant(tmp_path, "b", scale=0.9))
    r.store.activate(good)
    r.store.activate(newer)
    path = os.path.join(r.store.models, newer + ".nnos")
    data = bytearray(open(path, "rb").read())
    data[100] ^= 0xFF
    open(path, "wb").write(bytes(data))
    r.loop.load_initial()
    assert r.loop.active.id == good
    assert any("does not load" in line for line in r.logs)


def test_hardware_watchdog_is_petted_every_tick_and_disarmed_on_stop(rig, tmp_path):
    r = rig()
    wd = tmp_path / "watchdog"
    wd.write_bytes(b"")
    r.loop.arm_watchdog(str(wd))
    r.ticks(10)
    assert wd.read_bytes() == b"\0" * 10
    r.loop.shutdown()
    assert wd.read_bytes().endswith(b"V")


def test_failsafe_trip_during_probation_rolls_back(rig, tmp_path):
    r = rig(probation_s=5.0)
    good = r.store.state()["active"]
    b = store_model(r.store, policy_variant(tmp_path, "b", scale=0.9))
    from nnos.runtime.slots import Slot
    r.loop.pending = Slot(b, r.store.load(b), r.board, r.loop.devices)
    r.ticks(3)
    assert r.loop.active.id == b
    assert r.loop.probation_end > 0
    r.dev.samples["pole"].t_host = 0.0                 # a sensor stops in probation
    r.loop.tick()
    assert r.loop.active.id == good
    assert "stale" in r.loop.probation_fault
    assert r.store.state()["active"] == good


def test_loop_process_starts_with_its_usb_device_unplugged(tmp_path):
    # regression (found booting the image): a board whose USB adapter was not plugged in at
    # start crashed the loop process (its channels did not exist before the first handshake)
    import subprocess
    import sys

    from nnos.compiler import compile
    from nnos.store import ModelStore
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    board = os.path.join(root, "hardware", "boards", "cartpole-usb.toml")
    store = ModelStore(str(tmp_path))
    plan = compile(os.path.join(root, "models", "cartpole", "cartpole.onnx"))
    store.activate(store.put(plan.to_bytes()), "test")
    r = subprocess.run([sys.executable, "-m", "nnos.runtime", "--board", board, "--data", str(tmp_path),
                        "--duration", "1.5", "--no-rt"], capture_output=True, text=True, timeout=60, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "device cartpole not available yet" in r.stderr
    tel = TelemetryReader(os.path.join(str(tmp_path), "run", "telemetry"))
    try:
        c = tel.counters()
    finally:
        tel.close()
    assert c["ticks"] >= 40, c
    assert c["failsafe_entries"] >= 1, c
    assert "cartpole" in c["failsafe_reason"], c


def test_a_failed_commit_goes_back_to_the_stored_model_and_answers(rig, tmp_path):
    # regression (hardening): the store write after probation failed (the model deleted during
    # probation); the answer was filed under "commit" while the request waited under "activate":
    # the request timed out, the loop ran B while the store said A, and every later activation
    # was refused as "in progress"
    r = rig(rate_hz=50, probation_s=1.0)
    good = r.store.state()["active"]
    server, t = _serve(r, tmp_path, scaled(120))
    try:
        reply = retried(3, "test_a_failed_commit_goes_back_to_the_stored_model_and_answers",
                        lambda: _activate_and_delete_in_probation(r, tmp_path, server),
                        lambda reply: reply["reason"] if reply["reason"].startswith("overrun") else None)
        assert not reply["ok"], reply
        assert reply["outcome"] == "rolled back", reply
        assert "store could not commit" in reply["reason"]
        assert r.loop.active.id == good == r.store.state()["active"]
        assert not r.loop.waiting
        assert r.loop.committing is None
        again = request(server.path, {"cmd": "activate", "model": good, "id": 3}, timeout=scaled(60))
        assert again.get("error") != "another activation is in progress", again
    finally:
        r.loop.stop = True
        t.join()
        server.close()


def _activate_and_delete_in_probation(r, tmp_path, server) -> dict:
    b = store_model(r.store, policy_variant(tmp_path, "b", scale=0.9))
    replies = []
    asker = threading.Thread(target=lambda: replies.append(
        request(server.path, {"cmd": "activate", "model": b, "id": 1}, timeout=scaled(60))))
    asker.start()
    wait_until(lambda: r.loop.probation_end >= 0 or not asker.is_alive(), 60, "the model's probation")
    if r.loop.probation_end >= 0:
        held = request(server.path, {"cmd": "status", "id": 2})["in_use"]
        assert held.get(b) == "under probation"
        os.unlink(r.store.plan_path(b))              # the commit's store write will fail
    asker.join(scaled(60))
    assert replies, "the activation was never answered"
    return replies[0]


def test_an_out_of_range_reading_is_a_fault_never_fed_to_the_network(rig):
    # regression (hardening): valid-CRC readings of 1e30 on a ±π channel were only counted while
    # the mode stayed running, and the cart got the full +10 N
    r = rig()
    r.ticks(3)
    assert not r.loop.safety.active
    r.state[2] = 1e30
    r.ticks(1)
    assert r.loop.safety.active
    assert "sensor cartpole.pole out of range (1e+30" in r.loop.safety.reason
    assert r.force == 0.0
    assert r.dev.samples["pole"].out_of_range == 1
    assert r.dev.samples["pole"].values[0] == np.float32(3.1416)   # clamped where it is kept, never passed on raw
    r.state[2] = np.nan
    r.ticks(1)
    assert r.loop.safety.active
    assert r.force == 0.0


def test_a_clamp_channel_is_clamped_and_counted_until_its_fault_threshold(tmp_path, rig):
    board = tmp_path / "board.toml"
    r = rig()
    text = open(r.board.path).read().replace(
        'range = [-3.1416, 3.1416]', 'range = [-3.1416, 3.1416]\nout_of_range = "clamp"')
    board.write_text(text)
    from nnos_hardware.board import load_board
    ch = load_board(str(board)).channel("cartpole", "pole")
    assert ch.out_of_range == "clamp"
    from nnos_hardware.devices import SimulatedDevice
    dev = SimulatedDevice("cartpole", load_board(str(board)).devices[0].channels)
    dev.open()
    dev.feed("pole", [5.0, 0.0])
    s = dev.samples["pole"]
    assert s.values[0] == np.float32(3.1416)
    assert s.out_of_range == 1
    assert s.bad_run == 1
    dev.feed("pole", [0.1, 0.0])
    assert s.bad_run == 0
    assert s.out_of_range == 1


def test_failsafe_reason_is_cleared_when_failsafe_ends_and_kept_as_the_last(rig):
    r = rig(failsafe="exit = \"auto\"\ngood_ticks = 2")
    r.ticks(2)
    r.dev.samples["pole"].t_host -= 1.0
    r.loop.tick()
    reader = TelemetryReader(r.tel.path)
    c = reader.counters()
    assert "stale" in c["failsafe_reason"]
    r.ticks(3)
    c = reader.counters()
    reader.close()
    assert not r.loop.safety.active
    assert c["failsafe_reason"] == ""
    assert "stale" in c["last_failsafe_reason"]


def test_a_reason_that_changes_every_tick_is_logged_once_a_second_with_a_count(rig):
    r = rig()
    r.ticks(2)
    for i in range(50):
        r.state[2] = 10.0 + i                   # a new value, so a new reason, every tick
        r.ticks(1)
    lines = [x for x in r.logs if "FAILSAFE" in x]
    assert 1 <= len(lines) <= 3, lines
    r.dev.samples["cart"].t_host -= 10.0             # another kind of reason is said at once
    r.loop.tick()
    assert "stale" in r.logs[-1], r.logs[-1]
    assert "FAILSAFE" in r.logs[-1], r.logs[-1]
    from nnos.runtime.loop import Throttle
    out = []
    t = Throttle(out.append, every_s=0.05)
    t("k", "a")
    t("k", "b")
    t("k", "c")
    time.sleep(0.06)
    t("k", "d")
    assert out[0] == "a"
    assert len(out) == 2
    assert out[1].startswith("d (+2 similar lines")


def test_requests_work_from_a_run_directory_near_the_socket_path_limit(tmp_path):
    """Regression: the client's reply socket was a file beside the loop's; from a deep data
    directory (~90 characters) its name passed the 107-byte limit of a socket path and every
    request failed with "nothing is listening … None". The reply address is abstract now."""
    import threading
    run = tmp_path / ("d" * max(1, 92 - len(str(tmp_path)))) / "run"
    server = ControlServer(str(run / "loop.sock"))
    assert len(server.path) < 108
    done = threading.Event()

    def answer():
        while not done.is_set():
            req = server.receive()
            if req is not None:
                server.reply(req[1], {"ok": True, "id": req[0]["id"], "echo": req[0]["cmd"]})
            time.sleep(0.001)
    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        assert request(server.path, {"cmd": "status", "id": 7}, timeout=scaled(5)) == {"ok": True, "id": 7, "echo": "status"}
        assert not [p for p in os.listdir(run) if p.startswith("client-")], "no reply socket file is left behind"
    finally:
        done.set()
        t.join(5)
        server.close()


def test_an_action_chunk_drives_the_actuator_through_temporal_ensembling(tmp_path):
    """A policy emitting 5 actions at once, bound with chunk = "ensemble": each tick's force is
    ACT's weighted mean of every chunk covering that tick (numpy reference), scaled and clamped
    by the binding."""
    from nnos_hardware.board import load_board
    from nnos_hardware.devices import SimulatedDevice
    from tests.support.action_chunks import act_reference, chunk_policy
    k, m = 5, 0.3
    board = board_at(tmp_path, 50)
    text = open(board.path).read().replace('tensor = "action"', 'tensor = "actions"').replace(
        "clamp = [-10.0, 10.0]", f'clamp = [-10.0, 10.0]\nchunk = "ensemble"\nensemble_m = {m}')
    text = text.replace(board.model, chunk_policy(str(tmp_path / "chunk.onnx"), k))
    (tmp_path / "chunk.toml").write_text(text)
    board = load_board(str(tmp_path / "chunk.toml"))
    dev = SimulatedDevice("cartpole", board.devices[0].channels)
    dev.open()
    store = ModelStore(str(tmp_path / "data2"))
    store.activate(store_model(store, board.model), "test")
    tel = TelemetryWriter(str(tmp_path / "tel2"))
    loop = Loop(board, {"cartpole": dev}, store, tel, LoopConfig(probation_s=0.1), log=lambda m: None)
    loop.load_initial()
    rng = np.random.default_rng(3)
    obs = rng.uniform(-1, 1, size=(30, 4))
    chunks, forces = {}, []
    w = onnx.numpy_helper.to_array(next(i for i in onnx.load(board.model).graph.initializer if i.name == "W"))
    try:
        for t in range(30):
            dev.feed("cart", obs[t, :2])
            dev.feed("pole", obs[t, 2:])
            loop.tick()
            chunks[t] = (obs[t] @ w).reshape(k, 1)
            forces.append(float(dev.commands["force"][0]))
        assert not loop.safety.active, loop.safety.reason
        want = np.clip(10.0 * act_reference(chunks, 30, k, 1, m)[:, 0], -10, 10)
        np.testing.assert_allclose(forces, want, rtol=1e-4, atol=1e-5)
    finally:
        loop.shutdown()
        tel.close()


def test_a_chunk_that_does_not_fit_the_actuator_is_refused_naming_both(tmp_path):
    from nnos.compiler import compile
    from nnos_hardware.board import load_board
    from nnos_hardware.errors import ConfigError
    from tests.support.action_chunks import chunk_policy
    board = board_at(tmp_path, 50)
    plain = open(board.path).read().replace('tensor = "action"', 'tensor = "actions"')
    plan = compile(chunk_policy(str(tmp_path / "c.onnx"), 5), check=False)
    (tmp_path / "b.toml").write_text(plain)
    with pytest.raises(ConfigError, match=r"float32\[1, 5, 1\], but channel cartpole.force takes 1 float32 values; "
                       r"if it is a chunk of 5 actions, set chunk"):
        load_board(str(tmp_path / "b.toml")).check_plan(plan)
    two = plain.replace("shape = [1]\nrange = [-10.0, 10.0]", "shape = [2]\nrange = [-10.0, 10.0]").replace(
        "clamp = [-10.0, 10.0]", 'clamp = [-10.0, 10.0]\nchunk = "replace"')
    (tmp_path / "b.toml").write_text(two)
    with pytest.raises(ConfigError, match=r"a chunk must be \[\.\.\., K, 2\]"):
        load_board(str(tmp_path / "b.toml")).check_plan(plan)


def test_a_reloaded_board_brings_its_new_max_rate_into_force(rig):
    """Regression: a reload that changed only an actuator's max_rate (or failsafe rule), not the
    rate, kept the old limits."""
    r = rig()
    r.live()
    text = open(r.board.path).read()
    assert 'units = "N"' in text
    open(r.board.path, "w").write(text.replace('units = "N"', 'units = "N"\nmax_rate = 25.0'))   # 0.5 N a tick
    answers = []
    r.loop.on_answer = lambda addr, msg: answers.append(msg)
    r.loop.handle({"cmd": "reload_board", "id": 1}, "addr")
    r.dev.sent.clear()

    def swing(t):                       # the pole flips side every 0.1 s: the policy wants big jumps
        r.state[2] = 0.2 if int(t * 10) % 2 else -0.2
        return {"cart": r.state[:2], "pole": r.state[2:]}
    r.dev.source = swing
    r.loop.run(None, scaled(1.0))
    assert answers and answers[0]["ok"], answers
    forces = np.array([c["force"][0] for _, c in r.dev.sent])
    assert np.abs(np.diff(forces)).max() > 0.4, "the policy did push"
    assert np.abs(np.diff(forces)).max() <= 0.5 + 1e-5


def test_a_board_with_model_cpus_runs_its_policy_on_a_team(rig, tmp_path, monkeypatch):
    """model_cpus = 2: the policy's large products split with a worker thread (started when the
    slot is bound, ended with it); the actuator gets bitwise what one CPU computes."""
    import os
    monkeypatch.setenv("NNOS_BACKEND", "cpu")
    slow = policy_variant(tmp_path, "slow", slow=2)
    before = set(os.listdir("/proc/self/task"))
    one, two = rig("one", model=slow), rig("two", model=slow, model_cpus=2)
    assert one.loop.active.cpus == "1 CPU"
    assert two.loop.active.cpus.startswith("2 CPUs"), two.loop.active.cpus
    assert "2 CPUs" in two.loop.active.backend_report
    assert len(set(os.listdir("/proc/self/task")) - before) == 1
    for i in range(20):
        for r in (one, two):
            r.state[:] = [0.01 * i, -0.02 * i, 0.03, 0.01 * i]
            r.ticks(1)
        assert two.force == one.force and not two.loop.safety.active and not one.loop.safety.active, i
    two.loop.active.close()
    assert set(os.listdir("/proc/self/task")) - before == set()
