"""Starting simulated devices: a simulator is a process that prints {"port": PATH} first."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time

from .errors import DeviceError


def start_simulator(command: list[str], name: str, timeout: float = 10.0, cwd: str | None = None):
    """Start ``command`` (a leading "python" means this interpreter); return (process, port)."""
    cmd = [sys.executable] + command[1:] if command[0] in ("python", "python3") else list(command)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd or root, env=env)
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        if proc.poll() is not None:
            raise DeviceError(name, f"simulator {command} exited with {proc.returncode} before naming its port")
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line += os.read(proc.stdout.fileno(), 1)
    try:
        port = json.loads(line)["port"]
    except (ValueError, KeyError) as e:
        proc.kill()
        raise DeviceError(name, f"simulator {command} did not print {{\"port\": ...}} within {timeout} s; "
                          f"got {line[:200]!r}") from e
    return proc, port
