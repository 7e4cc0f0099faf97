"""services/prometheus with the real tools: promtool checks the configuration and the rules and
runs the rules' unit tests (services/prometheus/tests/alerts_test.yml: every alert, its timing
and its words); then a real Prometheus and Alertmanager watch two real `nnos up` devices (and
one address where nothing answers) through file-based discovery and the fleet's read-only
scrape token, and alerts fire on what really happens to the devices: one is down, one's robot
stops answering (failsafe), one rolls back a model that fails its probation, one reports an
update rolled back — each reaching Alertmanager's webhook. The `for:` durations are shortened in
the test's copy of the rules (1 s evaluations, alerts re-sent every 2 s); nothing else is
changed."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from nnos.update import record
from tests.support.paths import ROOT
from tests.support.timing import scaled, wait_until
from tests.support.up import Up, free_port, running

HERE = os.path.join(ROOT, "services", "prometheus")
TOOLS = ("prometheus", "promtool", "prometheus-alertmanager")
pytestmark = [pytest.mark.xdist_group("system"),
              pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason=f"needs {', '.join(TOOLS)} (./build.sh setup installs them)")]
SCRAPE_TOKEN = "nnos_scrape_fleet-test-token"


def promtool(*args: str, cwd: str = HERE) -> str:
    r = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_the_configuration_and_rules_check_and_their_unit_tests_pass(tmp_path):
    copy = _copy(tmp_path, shorten=False)
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=copy)
    out = promtool("check", "rules", "rules/nnos.yml")
    assert re.search(r"SUCCESS: 12 rules found", out), out
    assert "SUCCESS" in promtool("test", "rules", "tests/alerts_test.yml")
    r = subprocess.run(["amtool", "check-config", os.path.join(HERE, "alertmanager.yml")], capture_output=True, text=True)
    assert r.returncode == 0 or shutil.which("amtool") is None, r.stdout + r.stderr


def test_a_missing_scrape_token_file_is_named(tmp_path):
    copy = _copy(tmp_path, shorten=False)
    os.unlink(os.path.join(copy, "scrape_token"))
    r = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=copy, capture_output=True, text=True)
    assert r.returncode != 0 and "scrape_token" in r.stdout + r.stderr


def _copy(tmp_path, shorten: bool, alertmanager: int | None = None, devices: list | None = None) -> str:
    """The configuration as an operator deploys it (the token file beside it); for the live test,
    1-s scrapes and evaluations and short `for:`s."""
    d = tmp_path / "prometheus"
    shutil.copytree(HERE, d, ignore=shutil.ignore_patterns("tests"))
    (d / "scrape_token").write_text(SCRAPE_TOKEN + "\n")
    if shorten:
        conf = (d / "prometheus.yml").read_text()
        conf = re.sub(r"(scrape_interval|evaluation_interval): 5s", r"\1: 1s", conf)
        conf = conf.replace("scrape_timeout: 4s", "scrape_timeout: 1s")
        (d / "prometheus.yml").write_text(conf.replace('"127.0.0.1:9093"', f'"127.0.0.1:{alertmanager}"'))
        rules = (d / "rules" / "nnos.yml").read_text()
        (d / "rules" / "nnos.yml").write_text(re.sub(r"for: \d+[sm]", "for: 2s", rules))
    if devices is not None:
        (d / "devices" / "fleet.json").write_text(json.dumps(devices))
    return str(d)


class Webhook(BaseHTTPRequestHandler):
    got: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Webhook.got.extend(a["labels"]["alertname"] for a in body["alerts"] if a["status"] == "firing")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def watched(tmp_path, devices: list, dead: bool = False):
    """A real Alertmanager (its webhook here) and Prometheus watching ``devices`` (``robot``
    labels r1, r2, … in their order; ``dead``: and an address where nothing answers, r9);
    yields Prometheus's URL."""
    procs, hook = [], None
    try:
        Webhook.got = []
        hook = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        am_port, prom_port = free_port(), free_port()
        am_conf = tmp_path / "alertmanager.yml"
        text = open(os.path.join(HERE, "alertmanager.yml")).read().replace("group_wait: 10s", "group_wait: 1s")
        am_conf.write_text(text.replace("127.0.0.1:9099", f"127.0.0.1:{hook.server_port}"))
        procs.append(subprocess.Popen(["prometheus-alertmanager", f"--config.file={am_conf}", f"--storage.path={tmp_path / 'am'}",
                                       f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp_path / "am.log", "w")))
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{am_port}/-/ready", timeout=2).status_code == 200, scaled(30),
                   "Alertmanager ready", 0.2, ignore=(httpx.HTTPError,))
        targets = [{"targets": [u.url.split("//")[1]], "labels": {"robot": f"r{i + 1}"}} for i, u in enumerate(devices)]
        if dead:
            targets.append({"targets": [f"127.0.0.1:{free_port()}"], "labels": {"robot": "r9"}})      # nothing answers
        conf = _copy(tmp_path, shorten=True, alertmanager=am_port, devices=targets)
        procs.append(subprocess.Popen(["prometheus", f"--config.file={conf}/prometheus.yml",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=2s"],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w")))
        # Until its storage is open Prometheus answers every query "Service Unavailable" (503).
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2).status_code == 200, scaled(60),
                   "Prometheus ready", 0.2, ignore=(httpx.HTTPError,))
        yield f"http://127.0.0.1:{prom_port}"
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        if hook is not None:
            hook.shutdown()


def started(*devices: Up) -> list:
    for u in devices:
        u.wait_for(running, scaled(60))
        u.url = u.wait_for_api(scaled(60))
    return list(devices)


def scrape_token_in(data) -> str:
    """The fleet's token in the device's data directory (as Ansible or the image provisions it)."""
    os.makedirs(data, exist_ok=True)
    path = os.path.join(str(data), "scrape_token")
    with open(path, "w") as f:
        f.write(SCRAPE_TOKEN + "\n")
    os.chmod(path, 0o600)
    return str(data)


@pytest.fixture
def fleet(tmp_path):
    devices = []
    try:
        for name in ("r1", "r2"):
            devices.append(Up(scrape_token_in(tmp_path / name), api_port=free_port()))
        with watched(tmp_path, started(*devices), dead=True) as prom:
            yield devices, prom
    finally:
        for u in devices:
            u.stop()


def freeze(up: Up, meanwhile) -> None:
    """The device's robot stops answering (its simulator stopped) while ``meanwhile()`` runs."""
    sim = int(subprocess.run(["pgrep", "-f", f"hardware.sim cartpole --port-link {up.data}"],
                             capture_output=True, text=True).stdout.split()[0])
    os.kill(sim, signal.SIGSTOP)
    try:
        meanwhile()
    finally:
        os.kill(sim, signal.SIGCONT)


def _query(prom: str, q: str) -> dict:
    """{robot: value} of a PromQL query now."""
    got = httpx.get(prom + "/api/v1/query", params={"query": q}, timeout=10).json()["data"]["result"]
    return {r["metric"].get("robot"): float(r["value"][1]) for r in got}


def _firing(prom: str) -> dict:
    alerts = httpx.get(prom + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("robot")) for a in alerts if a["state"] == "firing"}


def test_alerts_fire_on_what_happens_to_real_devices(tmp_path, fleet):
    from tests.support.policies import policy_variant
    (r1, r2), prom = fleet
    ask = {"ignore": (httpx.HTTPError, KeyError)}
    # scraped with the fleet's read-only token: both devices up, who they are
    wait_until(lambda: len(httpx.get(prom + "/api/v1/query", params={"query": "nnos_device_info"}, timeout=10)
                           .json()["data"]["result"]) == 2, scaled(60), "both devices scraped", 0.5, **ask)
    firing = wait_until(lambda: (f := _firing(prom)) and ("NnosDeviceDown", "r9") in f and f, scaled(60),
                        "the device that does not answer reported down", 0.5, **ask)
    assert not any(robot in ("r1", "r2") for _, robot in firing), firing
    # r1's robot stops answering: the loop fails safe, and stays there
    # (frozen until Alertmanager passed it on: a failsafe that ends first may never be notified)
    freeze(r1, lambda: wait_until(lambda: ("NnosFailsafe", "r1") in _firing(prom) and "NnosFailsafe" in Webhook.got,
                                  scaled(60), "r1's failsafe alert, at the webhook", 0.5, **ask))
    # r2: a new model on probation, and the robot stops answering meanwhile: the model is
    # rolled back (a fault in probation); then an update rolled back
    c = httpx.Client(base_url=r2.url, headers={"Authorization": f"Bearer {r2.token}"}, timeout=scaled(60))
    r = c.post("/v1/models", content=open(policy_variant(tmp_path, "v2", scale=0.97), "rb").read())
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    c.post(f"/v1/models/{mid}/activate", params={"probation_s": scaled(60), "wait": "false"})
    wait_until(lambda: c.get("/v1/status").json()["loop"]["active"] == mid, scaled(60), "r2's new model on probation", 0.05)
    freeze(r2, lambda: wait_until(lambda: c.get("/v1/status").json()["loop"]["active"] != mid, scaled(30),
                                  "r2's model rolled back", 0.05))
    wait_until(lambda: ("NnosModelRolledBack", "r2") in _firing(prom), scaled(60), "r2's model rollback alert", 0.5, **ask)
    record.save(r2.data, {"state": "rolled back", "why": "slot B did not come up healthy within its boot attempts",
                          "from": {"slot": "A"}, "to": {"slot": "B"}})      # what the health gate leaves
    wait_until(lambda: ("NnosUpdateRolledBack", "r2") in _firing(prom), scaled(60), "r2's update alert", 0.5, **ask)
    # each reached Alertmanager, and its webhook
    every = {"NnosDeviceDown", "NnosFailsafe", "NnosModelRolledBack", "NnosUpdateRolledBack"}
    wait_until(lambda: every <= set(Webhook.got), scaled(60), "the alerts at Alertmanager's webhook", 0.5,
               context=lambda: f"webhook got {Webhook.got}; Prometheus: "
                               f"{httpx.get(prom + '/api/v1/alertmanagers', timeout=10).text[:300]} "
                               + " ".join(ln for ln in httpx.get(prom + "/metrics", timeout=10).text.splitlines()
                                          if ln.startswith("prometheus_notifications_")))


@contextlib.contextmanager
def starved(pid: int, stopped_s: float = 0.3, every_s: float = 0.5):
    """Process ``pid`` runs only ``every_s - stopped_s`` of every ``every_s`` seconds meanwhile."""
    done = threading.Event()

    def bursts():
        while not done.is_set():
            os.kill(pid, signal.SIGSTOP)
            time.sleep(stopped_s)
            os.kill(pid, signal.SIGCONT)
            done.wait(every_s - stopped_s)
    t = threading.Thread(target=bursts, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()
        os.kill(pid, signal.SIGCONT)


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


@pytest.fixture
def small_partition(tmp_path):
    """A 64 MiB data partition (tmpfs) for one device."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "nnos-test-data", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"needs root to mount a small partition: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.mark.skipif(not os.path.exists(FAKETIME), reason="needs libfaketime (./build.sh setup installs faketime)")
def test_the_loop_misses_data_clock_and_install_alerts_fire_on_real_devices(tmp_path, small_partition):
    """r1's loop is starved of the CPU in bursts (stopped 0.3 s of every 0.5 s, as a device too
    busy for its rate would be): misses; then it hangs (stopped; its watchdog set long, as on an
    emulated device): loop down; its last install failed (the record nnos's install leaves when
    RAUC fails). r2 runs on a 64 MiB partition filled past 90 %, with its clocks 30 s ahead
    (libfaketime: the monotonic one too, as a constant offset — its Python sleeps fail with
    libfaketime 0.9.10 when only the wall clock is faked)."""
    r1 = Up(scrape_token_in(tmp_path / "r1"), api_port=free_port(), env={"NNOS_LOOP_WATCHDOG_S": "600"})
    r2 = Up(scrape_token_in(small_partition), api_port=free_port(),
            env={"LD_PRELOAD": FAKETIME, "FAKETIME": "+30s"})
    ask = {"ignore": (httpx.HTTPError, KeyError)}
    try:
        r1.wait_for(running, scaled(60))
        r1.url = r1.wait_for_api(scaled(60))
        r2.wait_for(running, scaled(60))
        r2.url = r2.wait_for_api(scaled(60))
        with watched(tmp_path, [r1, r2]) as prom:
            wait_until(lambda: len(httpx.get(prom + "/api/v1/query", params={"query": "nnos_device_info"}, timeout=10)
                                   .json()["data"]["result"]) == 2, scaled(60), "both devices scraped", 0.5, **ask)
            # r2: too little room; a clock 30 s ahead
            free = shutil.disk_usage(small_partition).free
            with open(small_partition / "filler", "wb") as f:
                f.write(b"\0" * (free - (4 << 20)))
            for name in ("NnosDataNearlyFull", "NnosClockDrift"):
                wait_until(lambda: (name, "r2") in _firing(prom), scaled(90), f"r2's {name}", 0.5, **ask,
                           context=lambda: f"firing {_firing(prom)}; free ratio {_query(prom, 'nnos:data_free_ratio')}; "
                                           f"drift {_query(prom, 'nnos:clock_drift_seconds')}")
            drift = _query(prom, "nnos:clock_drift_seconds")
            assert 25 < drift["r2"] < 35 and abs(drift["r1"]) < 2, drift
            # r1: an install RAUC failed, then the loop hangs
            record.save(r1.data, {"state": "installing", "from": {"slot": "A"}, "to": {"slot": "B"}})
            record.change(r1.data, "failed", why="rauc: Installation error: Failed updating slot rootfs.1")
            wait_until(lambda: ("NnosUpdateFailed", "r1") in _firing(prom), scaled(60), "r1's update-failed alert", 0.5, **ask)
            pid = httpx.get(r1.url + "/v1/status", headers={"Authorization": f"Bearer {r1.token}"},
                            timeout=10).json()["loop"]["pid"]
            # each condition held until Alertmanager passed the alert on (one that ends first may never be)
            with starved(pid):
                wait_until(lambda: ("NnosLoopMisses", "r1") in _firing(prom) and "NnosLoopMisses" in Webhook.got,
                           scaled(90), "r1's misses alert, at the webhook", 0.5, **ask)
            os.kill(pid, signal.SIGSTOP)
            try:
                wait_until(lambda: ("NnosLoopDown", "r1") in _firing(prom) and "NnosLoopDown" in Webhook.got,
                           scaled(60), "r1's loop-down alert, at the webhook", 0.5, **ask)
            finally:
                os.kill(pid, signal.SIGCONT)
            every = {"NnosLoopMisses", "NnosDataNearlyFull", "NnosClockDrift", "NnosUpdateFailed", "NnosLoopDown"}
            wait_until(lambda: every <= set(Webhook.got), scaled(60), "the alerts at Alertmanager's webhook", 0.5,
                       context=lambda: f"webhook got {Webhook.got}")
            # what the healthy device did not do
            assert not {a for a, robot in _firing(prom) if robot == "r1"} & {"NnosClockDrift", "NnosDataNearlyFull"}, \
                _firing(prom)
    finally:
        r1.stop()
        r2.stop()
