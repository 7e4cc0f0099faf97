"""`nnos up` as real processes for the tests: a data directory with a copy of the simulated
cart-pole board, its telemetry and its control plane."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from nnos.telemetry import TelemetryReader
from tests.support.timing import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Up:
    def __init__(self, data, api_port=0, env=None, board_text: str | None = None):
        """``board_text``: another board than the simulated cart-pole (tests/support/arms.py)."""
        self.data = str(data)
        self.api_port = api_port
        os.makedirs(self.data, exist_ok=True)
        self.board_path = os.path.join(self.data, "board.toml")      # a copy: PUT /v1/config rewrites it
        src = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")
        with open(self.board_path, "w") as f:
            f.write(board_text or open(src).read().replace(
                'model = "models/cartpole/cartpole.onnx"',
                f'model = "{os.path.join(ROOT, "models", "cartpole", "cartpole.onnx")}"'))
        self.log_path = os.path.join(self.data, "up.log")
        os.makedirs(self.data, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "nnos.cli", "up", "--data", self.data, "--no-status",
                                      "--board", self.board_path],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"),
                                     env=dict(os.environ, NNOS_API_PORT=str(api_port), **(env or {})))

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
        """The loop's counters and records once ``what(counters, records)`` holds."""
        def now():
            c, recs = self.counters()
            return (c, recs) if c is not None and what(c, recs) else None
        return wait_until(now, timeout, "the loop's counters", 0.1,
                          context=lambda: f"last counters {self.counters()[0]}\n{self.log[-3000:]}")

    def wait_for_api(self, timeout=30.0) -> str:
        """The control plane's URL once it answers and has an active model."""
        import httpx
        url = f"http://127.0.0.1:{self.api_port}"
        wait_until(lambda: httpx.get(url + "/v2/health/ready", timeout=1).json()["ready"], timeout,
                   "the control plane to come up", 0.2, ignore=(httpx.HTTPError,), context=lambda: self.log[-3000:])
        return url

    @property
    def token(self) -> str:
        return open(os.path.join(self.data, "token")).read().strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def running(c, recs):
    return c["mode"] == "running" and c["ticks"] > 50 and len(recs) > 50
