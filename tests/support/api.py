"""The control plane as it runs: a real uvicorn on 127.0.0.1 in its own process, and a client
holding its token."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.support.paths import BOARDS, POLICY, ROOT
from tests.support.timing import scaled
from tests.support.up import free_port

BOARD = os.path.join(BOARDS, "cartpole-sim.toml")


class Api:
    def __init__(self, data, max_upload_mb=4.0, env=None):
        self.data, self.port = str(data), free_port()
        os.makedirs(self.data, exist_ok=True)
        self.board = os.path.join(self.data, "board.toml")       # a copy: PUT /v1/config rewrites it
        with open(self.board, "w") as f:
            f.write(open(BOARD).read().replace('model = "models/cartpole/cartpole.onnx"', f'model = "{POLICY}"'))
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = os.path.join(self.data, "api.stderr")
        os.makedirs(self.data, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "nnos.controlplane", "--data", self.data, "--board", self.board,
                                      "--port", str(self.port), "--max-upload-mb", str(max_upload_mb)], cwd=ROOT,
                                     stderr=open(self.stderr_path, "w"), env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v2/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(open(self.stderr_path).read())
        self.token = open(os.path.join(self.data, "token")).read().strip()
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120)

    def stop(self):
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)
