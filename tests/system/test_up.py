"""The whole system as a user runs it: `nnos up` on the simulated cart-pole board — processes,
the serial link, the trained policy — and what happens when parts of it die."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nnos.fsutil import atomic_write

from tests.support.paths import ROOT
from tests.support.up import running as _running


# The two whole-system tests run one after the other (one xdist group): each pins a SCHED_FIFO
# loop to the same CPU, and two of those would make each other miss ticks.
pytestmark = pytest.mark.xdist_group("system")


def _ticking(c, recs):
    """A loop that ticks (in whatever mode)."""
    return c["ticks"] > 50 and len(recs) > 50


@pytest.mark.slow
def test_up_balances_survives_crashes_and_stops_safely(up):
    c, recs = up.wait_for(_running)
    assert "provisioned cartpole.onnx" in up.log
    assert c["active"]
    # the policy balances the real-time simulator over the serial link: θ is the third input
    c, recs = up.wait_for(lambda c, r: c["ticks"] > 250)
    theta = recs["inputs"][:, 2]
    # misses are counted, not hidden: a parallel test load on this 2-vCPU VM can stall even a
    # SCHED_FIFO process by a period now and then (see benchmarks/RESULTS.md); allow 1 %
    assert np.all(np.abs(theta) < np.radians(12))
    assert c["misses"] <= c["ticks"] // 100
    rate = (len(recs) - 1) / ((int(recs["t_ns"][-1]) - int(recs["t_ns"][0])) / 1e9)
    assert 45 < rate < 55

    # kill -9 the loop: the supervisor restarts it, it reloads the active model and ticks again.
    # (While no loop drives it, the pole may fall: its readings then leave the board's range —
    # a fault, so the new loop may tick in failsafe until the robot is reset below.)
    pid = c["pid"]
    os.kill(pid, signal.SIGKILL)
    up.wait_for(lambda c, r: c["pid"] != pid and _ticking(c, r))
    assert "loop exited with -9; restart #1" in up.log

    # hang it (SIGSTOP): the watchdog notices the stale heartbeat, kills and restarts it
    c, _ = up.counters()
    pid = c["pid"]
    os.kill(pid, signal.SIGSTOP)
    up.wait_for(lambda c, r: c["pid"] != pid and _ticking(c, r))
    assert "missed its watchdog" in up.log

    # kill -9 the robot (the simulator): the loop goes to failsafe, the supervisor brings the
    # simulator back (a fresh robot, pole upright), the loop reconnects and leaves failsafe by itself
    sim_pid = int(subprocess.run(["pgrep", "-f", f"hardware.sim cartpole --port-link {up.data}"],
                                 capture_output=True, text=True).stdout.split()[0])
    os.kill(sim_pid, signal.SIGKILL)
    up.wait_for(lambda c, r: c["pid"] != pid and ("device cartpole lost" in up.log), 10)
    up.wait_for(lambda c, r: c["mode"] == "running", 30)
    assert "device cartpole lost" in up.log
    assert "device cartpole is back" in up.log

    # SIGTERM: the loop stops first and leaves the actuators by their failsafe rule (here: the safe value)
    up.stop()
    log = up.log
    assert up.proc.returncode == 0
    assert "actuators by their failsafe rules (cartpole.force: value)" in log
    assert log.index("stopped loop") < log.index("stopped sim-cartpole")


@pytest.mark.slow
def test_control_plane_manages_models_of_the_running_loop(tmp_path, up_with_api):
    import httpx
    from tests.support.policies import policy_variant
    up, url = up_with_api
    port, token = up.api_port, up.token
    c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    first = c.get("/v1/status").json()["loop"]["active"]
    from nnos.backends.cpu.toolchain import find_compiler
    backend = c.get("/v1/status").json()["loop"]["backend"]      # which backend runs it, and why not another
    if find_compiler():     # the object's origin, and that it was checked against the reference before it ran
        assert backend.startswith("cpu (native object "), backend
        assert "verified against numpy" in backend, backend
    else:
        assert backend.startswith("numpy (not cpu: no C compiler"), backend
    variant = policy_variant(tmp_path, "v", scale=0.95)
    up_report = c.post("/v1/models", content=open(variant, "rb").read()).json()
    mid = up_report["id"]
    assert up_report["report"]["latency"]["backend"] == backend.split()[0]     # measured on the backend that runs
    r = c.post(f"/v1/models/{mid}/activate", params={"probation_s": 1.0})
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "active", r.text
    st = c.get("/v1/status").json()
    assert st["loop"]["active"] == mid
    assert st["store"]["previous"] == first
    assert st["loop"]["mode"] == "running"
    assert st["loop"]["swaps"] >= 1
    # the compile ran beside the loop: 1 % of ticks missed at most, plus a few a busy host takes
    from tests.support.timing import factor
    assert st["loop"]["misses"] <= st["loop"]["ticks"] // 100 + round(3 * factor()), st["loop"]
    r = c.post("/v1/models/" + first + "/shadow")
    assert r.status_code == 200
    time.sleep(1.0)
    st = c.get("/v1/status").json()["loop"]
    assert st["shadow"] == first
    assert st["shadow_divergence"]["max"][0] > 0
    r = c.post("/v1/rollback")
    assert r.status_code == 200
    assert c.get("/v1/status").json()["loop"]["active"] == first
    devs = c.get("/v1/devices").json()["devices"]
    assert devs[0]["name"] == "cartpole"
    assert not devs[0]["lost"]
    assert devs[0]["open"]
    assert devs[0]["faults"]["crc_errors"] == 0
    assert devs[0]["faults"]["frames_in"] > 50
    cart = next(ch for ch in devs[0]["channels"] if ch["name"] == "cart")
    assert cart["stale"] is False
    assert cart["readings"] > 50
    assert cart["age_s"] < 0.1
    assert any("ticking at 50 Hz" in line for line in c.get("/v1/logs", params={"process": "loop"}).json()["lines"])
    # a new board config (twice the rate, tighter clamp) is applied by the running loop
    board_path = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")
    cfg = c.get("/v1/config").json()
    assert cfg["path"] == up.board_path
    text = open(up.board_path).read()
    r = c.put("/v1/config", content=text.replace("rate_hz = 50", "rate_hz = 100").replace(
        "clamp = [-10.0, 10.0]", "clamp = [-9.0, 9.0]"))
    assert r.status_code == 200, r.text
    assert r.json()["rate_hz"] == 100, r.text
    t0, n0 = time.monotonic(), c.get("/v1/status").json()["loop"]["ticks"]
    time.sleep(1.0)
    st = c.get("/v1/status").json()["loop"]
    rate = (st["ticks"] - n0) / (time.monotonic() - t0)
    assert st["rate_hz"] == 100, (st, rate)
    assert 85 < rate < 115, (st, rate)
    assert st["mode"] == "running", (st, rate)
    assert board_path != up.board_path
    # the same device found another way (USB identity, not the simulator) needs a restart: the
    # running loop refuses it (regression: reload used to compare only names and channels) and
    # the file stays; at=next-start only writes it
    now = open(up.board_path).read()
    usb = now.replace('simulator = ["python", "-m", "nnos_hardware.sim", "cartpole"]',
                      'usb = { vendor = 0x0403, product = 0x6001, serial = "NNOSCP01" }')
    r = c.put("/v1/config", content=usb)
    assert r.status_code == 422, r.text
    assert "needs a restart" in r.json()["detail"], r.text
    assert open(up.board_path).read() == now
    r = c.put("/v1/config", params={"at": "next-start"}, content=usb)
    assert r.status_code == 200, r.text
    assert "next starts" in r.json()["note"], r.text
    assert open(up.board_path).read() == usb
    assert c.get("/v1/status").json()["loop"]["mode"] == "running"
    assert c.post("/v1/device/reboot").status_code == 409           # not the machine's init here
    atomic_write(up.board_path, now.encode())
    # the live telemetry stream (WebSocket), decimated to the rate the client asks for
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect
    import json
    ws_url = f"ws://127.0.0.1:{port}/v1/telemetry?hz=20"
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        msgs = [json.loads(ws.recv(timeout=5)) for _ in range(5)]
    ticks = [m["tick"] for m in msgs]
    assert ticks == sorted(ticks)
    assert len(set(ticks)) == 5
    assert msgs[0]["mode"] == "running"
    assert len(msgs[0]["inputs"]) == 4
    assert len(msgs[0]["outputs"]) == 1
    with pytest.raises((ConnectionClosed, InvalidStatus)):       # refused: HTTP 403 before the upgrade
        with connect(ws_url + "&token=wrong") as ws:
            ws.recv(timeout=5)
    # the client CLI, as a user would run it
    out = subprocess.run([sys.executable, "-m", "nnos.cli", "ctl", "status", "--url", url, "--token", token],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0
    assert '"mode": "running"' in out.stdout
    bad = subprocess.run([sys.executable, "-m", "nnos.cli", "ctl", "activate", "0" * 64, "--url", url,
                          "--token", token], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2
    assert "HTTP 404" in bad.stderr
    c.close()


# a probation a host stall spoiled: the loop overran its tick, the simulator's sensor went stale,
# or admission's p99.9 caught a stalled run (CI: the page's activation once did not end 'active')
HOST_STALL = re.compile(r"overrun: tick took \d+ µs|sensor \S+ stale \(no reading for [\d.]+ s|too slow for the tick budget")


def _activate_from_page(page, mid: str) -> tuple[int, str]:
    """Click the model's Activate button and wait for the control plane's answer (its own
    activation timeout is 120 s); a probation a host stall spoiled is asked again, reported.
    Returns the answer's status and body."""
    from tests.support.timing import report_retry, scaled
    for attempt in range(3):
        with page.expect_response(lambda r: r.url.endswith(f"/v1/models/{mid}/activate"),
                                  timeout=int(scaled(150) * 1000)) as answer:
            page.click(f"button[data-act='{mid}']")
        status, body = answer.value.status, answer.value.text()
        stall = HOST_STALL.search(body)
        if status == 200 or stall is None or attempt == 2:
            return status, body
        report_retry("test_dashboard_in_a_real_browser", f"the page's activation: {stall.group(0)}")
    return status, body


PLOTS = """Object.fromEntries(Object.entries(window.nnos.plots).map(([k, u]) => [k, {time: u.scales.x.time,
    axes: u.axes.length, y: u.axes[1].label, series: u.series.slice(1).map((s) => s.label), points: u.data[0].length}]))"""


@pytest.mark.slow
@pytest.mark.skipif(not any(os.path.exists(p) for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")),
                    reason="chromium is not installed (./build.sh installs it)")
def test_dashboard_in_a_real_browser(tmp_path, up_with_api):
    """Headless Chromium (Debian's, driven by Playwright) against a running `nnos up`: the page
    asks for the token, plots 10 s of data with uPlot (time axes, channels named from the board,
    units), marks a model swap and a forced failsafe, says which boot-partition config the device
    refused, and the activate button works. Checked through the page's own state (window.nnos);
    the screenshot is kept as a test artifact."""
    import httpx
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
    from tests.support.policies import policy_variant
    from tests.support.timing import scaled
    up, url = up_with_api
    token = up.token
    variant = policy_variant(tmp_path, "v", scale=0.95)
    mid = httpx.post(url + "/v1/models?name=variant", content=open(variant, "rb").read(),
                     headers={"Authorization": f"Bearer {token}"}, timeout=120).json()["id"]
    from nnos.boot import bootconfig
    card = tmp_path / "card"                      # what init made of a card's config: a network it refused
    card.mkdir()
    (card / "network.toml").write_text('gateway = "10.0.0.1"\n')
    bootconfig.take(str(card), os.path.dirname(up.board_path), lambda msg: None)
    exe = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else "/usr/bin/chromium-browser"
    wait = int(scaled(30) * 1000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        held, refused = [], []        # the wrong token's later requests answered only after the right one is in use
        page.route("**/v1/**", lambda route: held.append(route) if refused and route.request.headers.get(
            "authorization") == "Bearer wrong" else route.continue_())
        page.on("response", lambda r: r.status == 401 and refused.append(r.url))
        page.goto(url + "/?window=8")                                   # no token: a prompt, not "-" everywhere
        page.wait_for_function("document.body.dataset.login === '1'", timeout=wait)
        assert page.locator("#login").is_visible() and not page.locator("#main").is_visible()
        page.fill("#token", "wrong")
        page.click("#login-form button")
        page.wait_for_function("document.getElementById('login-why').textContent.includes('refused')", timeout=wait)
        deadline = time.monotonic() + wait / 1000
        while not held and time.monotonic() < deadline:              # the page asks again with the wrong token
            page.wait_for_timeout(50)
        page.fill("#token", token)
        page.click("#login-form button")
        page.wait_for_function("document.body.dataset.mode === 'running'", timeout=wait)
        late = list(held)                    # regression (CI): a late 401 for the replaced token hid the page again
        for route in late:
            route.continue_()
        page.wait_for_function(f"+(document.body.dataset.staleRefusals || 0) >= {len(late)}", timeout=wait)
        page.unroute("**/v1/**")
        assert late and page.locator("#main").is_visible() and page.evaluate("document.body.dataset.login") == "0"
        bootcfg = page.locator("#bootcfg").text_content()
        assert "network.toml: " in bootcfg and "a gateway needs a static address" in bootcfg, bootcfg
        page.wait_for_function("window.nnos.state.points >= 10 * 50 * 0.9", timeout=int(scaled(60) * 1000))   # 10 s
        plots = page.evaluate(PLOTS)
        assert plots["lateness"]["time"] and plots["lateness"]["series"] == ["lateness", "compute"]
        assert plots["/cartpole/cart"]["series"] == ["position", "velocity"] and plots["/cartpole/cart"]["y"].endswith("(m, m/s)")
        assert plots["/cartpole/force"]["series"] == ["force"] and plots["/cartpole/force"]["y"].endswith("(N)")
        # a fixed window of points (here 8 s): a tab left open for hours holds no more
        assert all(p["time"] and p["axes"] == 2 and 7 * 50 <= p["points"] <= 9 * 50 for p in plots.values()), plots
        page.click("#pause")                                   # paused: the plots hold still while data comes
        held = page.evaluate("window.nnos.plots.lateness.data[0].at(-1)")
        seen = page.evaluate("window.nnos.state.points")
        page.wait_for_function(f"window.nnos.state.points > {seen + 50}", timeout=wait)
        assert page.evaluate("window.nnos.plots.lateness.data[0].at(-1)") == held
        page.click("#pause")                                   # resumed: the newest data again
        page.wait_for_function(f"window.nnos.plots.lateness.data[0].at(-1) > {held}", timeout=wait)
        assert "Not set up" in page.locator("#vm-none").text_content() and not page.locator("#vm-start").is_visible()
        page.wait_for_function("document.body.dataset.update === 'unavailable'", timeout=wait)   # no update slots
        assert "not possible here" in page.locator("#upd-none").text_content() and not page.locator("#upd-install").is_visible()
        first = int(page.evaluate("document.body.dataset.lastTick"))
        shot1 = page.locator("#plot-late").screenshot()
        page.wait_for_function(f"+document.body.dataset.lastTick > {first + 20}", timeout=wait)
        assert page.locator("#plot-late").screenshot() != shot1            # the plot moved
        # a model swap from the page: marked on the time axis, its outcome in the models panel
        page.wait_for_selector(f"button[data-act='{mid}']", timeout=wait)
        status, body = _activate_from_page(page, mid)
        assert status == 200, f"the page's activation answered {status}: {body}\n{up.log()[-3000:]}"
        try:
            page.wait_for_function("document.getElementById('msg').textContent === 'active'", timeout=wait)
        except PlaywrightTimeout as e:
            raise AssertionError(f"the page shows {page.locator('#msg').text_content()!r}, not 'active'") from e
        page.wait_for_function(f"document.body.dataset.active === '{mid}'", timeout=wait)
        page.wait_for_function("window.nnos.state.swaps.length >= 1", timeout=wait)
        page.wait_for_function("document.getElementById('last-activation').textContent.includes('variant — active')",
                               timeout=wait)
        # regression: a background refresh's error replaced the activation's outcome in #msg;
        # now it has its own line, cleared when that refresh succeeds again
        page.route("**/v1/status", lambda route: route.abort())
        page.wait_for_function("document.getElementById('refresh-error').textContent.startsWith('status: ')",
                               timeout=wait)
        assert page.locator("#msg").text_content() == "active"
        page.unroute("**/v1/status")
        page.wait_for_function("document.getElementById('refresh-error').textContent === ''", timeout=wait)
        # a forced failsafe: the robot stops answering (SIGSTOP), then comes back
        sim = int(subprocess.run(["pgrep", "-f", f"hardware.sim cartpole --port-link {up.data}"],
                                 capture_output=True, text=True).stdout.split()[0])
        os.kill(sim, signal.SIGSTOP)
        try:
            page.wait_for_function("window.nnos.state.failsafeBands.length >= 1", timeout=wait)
            page.wait_for_function("document.body.dataset.mode === 'failsafe'", timeout=wait)
        finally:
            os.kill(sim, signal.SIGCONT)
        page.wait_for_function("document.body.dataset.mode === 'running'", timeout=int(scaled(60) * 1000))
        band = page.evaluate("window.nnos.state.failsafeBands[0]")
        assert band[1] >= band[0]
        # the stream drops (the control plane is killed; the supervisor restarts it): said, then live again
        api_pid = int(subprocess.run(["pgrep", "-f", f"nnos.controlplane --data {up.data}"],
                                     capture_output=True, text=True).stdout.split()[0])
        os.kill(api_pid, signal.SIGKILL)
        page.wait_for_function("document.body.dataset.connection.startsWith('stream dropped')", timeout=wait)
        seen = page.evaluate("window.nnos.state.points")
        page.wait_for_function("document.body.dataset.connection === 'live'", timeout=int(scaled(60) * 1000))
        page.wait_for_function(f"window.nnos.state.points > {seen + 50}", timeout=wait)
        art = os.environ.get("NNOS_TEST_ARTIFACTS", os.path.join(ROOT, "out", "test-artifacts"))
        os.makedirs(art, exist_ok=True)
        page.screenshot(path=os.path.join(art, "dashboard.png"), full_page=True)
        print(f"dashboard screenshot: {os.path.join(art, 'dashboard.png')}")
        assert errors == [], errors
        browser.close()


@pytest.mark.slow
def test_the_supervisor_runs_foxglove_when_enabled_off_the_loops_cpu(tmp_path):
    """NNOS_FOXGLOVE=1: the supervisor starts the Foxglove server beside the loop; a client that
    subscribes to everything through the control plane gets the board's channels; the loop keeps
    its rate. Without the flag there is no such process."""
    import json
    from websockets.sync.client import connect
    from tests.support.foxglove import FOXGLOVE, FoxgloveClient
    from tests.support.timing import scaled, wait_until
    from tests.support.up import Up, free_port, running
    port = free_port()
    up = Up(tmp_path / "data", api_port=free_port(), env={"NNOS_FOXGLOVE": "1", "NNOS_FOXGLOVE_PORT": str(port)})
    try:
        up.wait_for(running, scaled(60))
        url = up.wait_for_api(scaled(60))
        flog = os.path.join(up.data, "logs", "foxglove.log")
        wait_until(lambda: os.path.exists(flog) and "foxglove: serving on 127.0.0.1" in open(flog).read(), scaled(30),
                   "the Foxglove server", context=lambda: up.log[-3000:])
        fox = int(subprocess.run(["pgrep", "-f", f"nnos.foxglove_server --run {up.data}"], capture_output=True,
                                 text=True).stdout.split()[0])
        loop_cpus = os.sched_getaffinity(up.counters()[0]["pid"])
        assert not os.sched_getaffinity(fox) & loop_cpus or len(os.sched_getaffinity(0)) == 1, "off the loop's CPU"
        with connect(url.replace("http", "ws") + f"/v1/foxglove?token={up.token}", subprotocols=FOXGLOVE,
                     max_size=None) as ws:
            c = FoxgloveClient(ws)
            c.until_advertised({"/cartpole/cart", "/cartpole/force", "/loop"}, scaled(15))
            subs = c.subscribe_all()
            c0, _ = up.counters()
            got = c.messages(3.0)
            c1, _ = up.counters()
        topics = {subs[s]["topic"] for s, _, _ in got}
        assert {"/cartpole/cart", "/cartpole/force", "/loop"} <= topics, topics
        assert json.loads(next(p for s, _, p in got if subs[s]["topic"] == "/cartpole/cart"))["units"] == "m, m/s"
        assert c1["ticks"] - c0["ticks"] >= 3.0 * 50 * 0.8 and c1["misses"] - c0["misses"] <= 3, (c0, c1)
    finally:
        up.stop()
