"""The legacy VM against the loop, in one run: its boot time under TCG, the broker round trip
(guest → virtio-serial → broker → guest), and the loop's lateness at 1 kHz with the VM off, idle
(its telemetry agent polling every second) and hogging (two CPU spinners + 64 MB held) — the VM
limited exactly as the supervisor limits it (off the loop's CPU; cgroup v2 or SCHED_IDLE).

    python benchmarks/legacy_vm_bench.py [--seconds 15] [--pings 1000]

Needs out/legacy-vm (./build.sh legacy-vm). Target (issue 7): lateness with the VM hogging
within noise of the VM-off window; zero misses caused by it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from api_isolation_bench import window  # noqa: E402

from nnos.legacy.broker import Broker, serve  # noqa: E402
from nnos.legacy.vm import command  # noqa: E402
from nnos.supervisor.limits import apply  # noqa: E402

GUEST = os.path.join(ROOT, "out", "legacy-vm")


class Guest:
    """qemu with the guest's agents and an in-process broker that timestamps every request."""

    def __init__(self, workdir: str, agents: tuple[str, ...], settings: dict, limit: bool):
        self.data = os.path.join(workdir, "vmdata")
        os.makedirs(self.data, exist_ok=True)
        sock = os.path.join(workdir, f"vm-{agents[0]}.sock")
        self.console = os.path.join(workdir, f"console-{agents[0]}.log")
        self.broker = Broker(self.data)
        self.arrivals: list[int] = []
        inner = self.broker.handle

        def timed(line):
            self.arrivals.append(time.perf_counter_ns())
            return inner(line)
        self.broker.handle = timed
        self.broker.limit.rate, self.broker.limit.burst = 1e9, 10 ** 9       # measuring, not limiting
        self.t0 = time.perf_counter_ns()
        self.proc = subprocess.Popen(command(os.path.join(GUEST, "vmlinuz"), os.path.join(GUEST, "initrd.img"), sock,
                                             agents, console=self.console, settings=settings),
                                     stderr=subprocess.DEVNULL)
        if limit:
            self.limits = apply(self.proc.pid, "legacy-vm", 25, 256, max(os.sched_getaffinity(0)))
        while True:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(sock)
                break
            except OSError:
                s.close()
                time.sleep(0.02)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(self.broker, s, self.stop.is_set), daemon=True)
        self.thread.start()

    def text(self) -> str:
        try:
            return open(self.console, errors="replace").read()
        except OSError:
            return ""

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.proc.kill()
        self.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--pings", type=int, default=1000)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(GUEST, "initrd.img")):
        raise SystemExit("no guest: ./build.sh legacy-vm")
    d = tempfile.mkdtemp(prefix="nnos-legacy-bench-")
    # 1. boot time and the broker round trip (the ping agent asks, waits, asks again)
    g = Guest(d, ("ping",), {"pings": a.pings}, limit=False)
    try:
        end = time.monotonic() + 300
        while "ping: done" not in g.text() and time.monotonic() < end:
            time.sleep(0.2)
        first = (g.arrivals[0] - g.t0) / 1e9 if g.arrivals else float("nan")
        gaps = np.diff(np.array(g.arrivals[:a.pings], dtype=np.int64)) / 1000.0
    finally:
        g.close()
    print(f"legacy VM boot (qemu TCG start → first request at the broker): {first:.2f} s")
    print(f"broker round trip ({len(gaps)} sequential status.get): p50 {np.percentile(gaps, 50):.0f} µs "
          f"p99 {np.percentile(gaps, 99):.0f} µs max {gaps.max():.0f} µs")
    # 2. the loop at 1 kHz: VM off, idle, hogging — one nnos up, three windows
    board = open(os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")).read()
    board = board.replace("rate_hz = 50", "rate_hz = 1000").replace(
        '"nnos_hardware.sim", "cartpole"]', '"nnos_hardware.sim", "cartpole", "--sensor-hz", "1000"]').replace(
        "stale_ms = 100", "stale_ms = 20").replace('model = "models/cartpole/cartpole.onnx"',
                                                   f'model = "{ROOT}/models/cartpole/cartpole.onnx"')
    bpath = os.path.join(d, "board.toml")
    open(bpath, "w").write(board)
    up = subprocess.Popen([sys.executable, "-m", "nnos.cli", "up", "--board", bpath, "--data", d, "--no-status"],
                          cwd=ROOT, env=dict(os.environ, NNOS_API_PORT="0"), stderr=subprocess.DEVNULL)
    tel = os.path.join(d, "run", "telemetry")
    rows = {}
    try:
        end = time.monotonic() + 60
        while not os.path.exists(tel) and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(3)
        rows["VM off"] = window(tel, a.seconds)
        for name, agents in (("VM idle", ("telemetry",)), ("VM hogging", ("hog", "telemetry"))):
            g = Guest(d, agents, {"interval": 1}, limit=True)
            try:
                time.sleep(4)                                      # booted, agents running
                rows[name] = window(tel, a.seconds)
                rows[name]["vm_requests"] = g.broker.counters["requests"]
                limits = g.limits
            finally:
                g.close()
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
    print(f"loop at 1 kHz, {a.seconds:g} s windows; the VM limited: {limits}")
    for name, w in rows.items():
        print(f"{name:11} lateness p50 {w['p50']:6.1f} p99 {w['p99']:7.1f} p99.9 {w['p999']:7.1f} max {w['max']:8.1f} µs"
              f"  misses {w['misses']}  ({w['ticks']} ticks)")
    base = max(rows["VM off"]["p99"], 1e-9)
    print(f"p99 ratio to VM off: idle {rows['VM idle']['p99'] / base:.2f}, hogging {rows['VM hogging']['p99'] / base:.2f}")
    print(json.dumps({"boot_s": first, "rtt_us": {"p50": float(np.percentile(gaps, 50)),
                                                  "p99": float(np.percentile(gaps, 99))}, "loop": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
