"""The whole system as a user runs it: `nnos up` on the simulated cart-pole board — processes,
the serial link, the trained policy — and what happens when parts of it die."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nnos.telemetry import TelemetryReader
from tests.conftest import ROOT


class Up:
    def __init__(self, data):
        self.data = str(data)
        self.log_path = os.path.join(self.data, "up.log")
        os.makedirs(self.data, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "nnos.cli", "up", "--data", self.data, "--no-status"],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))

    @property
    def log(self) -> str:
        return open(self.log_path).read()

    def counters(self):
        path = os.path.join(self.data, "run", "telemetry")
        if not os.path.exists(path):
            return None, None
        try:
            r = TelemetryReader(path)
        except (ValueError, OSError):
            return None, None
        try:
            return r.counters(), r.records(500)
        finally:
            r.close()

    def wait_for(self, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c, recs = self.counters()
            if c is not None and what(c, recs):
                return c, recs
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting; last counters {self.counters()[0]}\n{self.log[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


@pytest.fixture
def up(tmp_path):
    u = Up(tmp_path / "data")
    yield u
    u.stop()


def _running(c, recs):
    return c["mode"] == "running" and c["ticks"] > 50 and len(recs) > 50


@pytest.mark.slow
def test_up_balances_survives_crashes_and_stops_safely(up):
    c, recs = up.wait_for(_running)
    assert "provisioned cartpole.onnx" in up.log and c["active"]
    # the policy balances the real-time simulator over the serial link: θ is the third input
    c, recs = up.wait_for(lambda c, r: c["ticks"] > 250)
    theta = recs["inputs"][:, 2]
    assert np.all(np.abs(theta) < np.radians(12)) and c["misses"] == 0
    rate = (len(recs) - 1) / ((int(recs["t_ns"][-1]) - int(recs["t_ns"][0])) / 1e9)
    assert 45 < rate < 55

    # kill -9 the loop: the supervisor restarts it, it reloads the active model and ticks again
    pid = c["pid"]
    os.kill(pid, signal.SIGKILL)
    up.wait_for(lambda c, r: c["pid"] != pid and _running(c, r))
    assert "loop exited with -9; restart #1" in up.log

    # hang it (SIGSTOP): the watchdog notices the stale heartbeat, kills and restarts it
    c, _ = up.counters()
    pid = c["pid"]
    os.kill(pid, signal.SIGSTOP)
    up.wait_for(lambda c, r: c["pid"] != pid and _running(c, r))
    assert "missed its watchdog" in up.log

    # kill -9 the robot (the simulator): the loop goes to failsafe, the supervisor brings the
    # simulator back, the loop reconnects and leaves failsafe by itself
    sim_pid = int(subprocess.run(["pgrep", "-f", f"hardware.sim cartpole --port-link {up.data}"],
                                 capture_output=True, text=True).stdout.split()[0])
    os.kill(sim_pid, signal.SIGKILL)
    up.wait_for(lambda c, r: c["failsafe_entries"] >= 1, 10)
    up.wait_for(lambda c, r: c["mode"] == "running", 30)
    assert "device cartpole lost" in up.log and "device cartpole is back" in up.log

    # SIGTERM: the loop stops first and leaves the actuators at their safe values
    up.stop()
    log = up.log
    assert up.proc.returncode == 0
    assert "actuators at their safe values" in log
    assert log.index("stopped loop") < log.index("stopped sim-cartpole")
