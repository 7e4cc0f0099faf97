"""Round trip over a pseudo-terminal at 1 kHz: the simulated device sends a SENSOR frame every
millisecond; the host (nnos-serial driver, pyserial) answers each with an ACTUATE frame; the
device measures sensor timestamp → command arrival. Compared in the same run with the floor:
the same two processes echoing a fixed 40-byte message over a raw pty with no protocol.

    python benchmarks/serial_bench.py [--seconds 10]

Prints p50/p99/max µs of both, their ratio, frames lost, and host CPU per 1000 frames.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nnos_hardware.board import load_board  # noqa: E402
from nnos_hardware.devices import NnosSerialDevice  # noqa: E402
from nnos_hardware.errors import TransportError  # noqa: E402
from nnos_hardware.spawn import start_simulator  # noqa: E402
from nnos.timing import percentiles  # noqa: E402

ECHO_DEVICE = r"""
import os, sys, time, tty, select, struct, json, signal
m, s = os.openpty(); tty.setraw(s)
print(json.dumps({"port": os.ttyname(s)}), flush=True)
stop = []; signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
rtts, nxt, buf = [], time.monotonic(), b""
while not stop:
    now = time.monotonic()
    if now >= nxt:
        nxt += 0.001
        os.write(m, b"%016x" % int(now * 1e6) + b"." * 23 + b"\n")
    r, _, _ = select.select([m], [], [], max(0, nxt - time.monotonic()))
    if r:
        buf += os.read(m, 4096)
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if len(line) >= 16:
                rtts.append(time.monotonic() * 1e6 - int(line[:16], 16))
print(json.dumps({"rtt": rtts}), flush=True)
"""


def floor(seconds: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", ECHO_DEVICE], stdout=subprocess.PIPE)
    port = json.loads(proc.stdout.readline())["port"]
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
    cpu0, t_end, buf, n = time.process_time(), time.monotonic() + seconds, b"", 0
    while time.monotonic() < t_end:
        if select.select([fd], [], [], 0.05)[0]:
            buf += os.read(fd, 4096)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                os.write(fd, line + b"\n")
                n += 1
    cpu = time.process_time() - cpu0
    proc.send_signal(signal.SIGTERM)
    rtt = np.array(json.loads(proc.communicate(timeout=10)[0].decode().splitlines()[-1])["rtt"])
    os.close(fd)
    return {**percentiles(rtt), "max": float(rtt.max()),
            "n": int(rtt.size), "host_cpu_ms_per_1000": 1000 * cpu / max(n, 1) * 1000}


def nnos_serial(seconds: float) -> dict:
    board = load_board(os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml"))
    proc, port = start_simulator(["python", "-m", "nnos_hardware.sim", "cartpole", "--sensor-hz", "1000",
                                  "--report-rtt"], "cartpole")
    answered = 0
    with NnosSerialDevice("cartpole", port, expected=board.devices[0].channels) as dev:
        last = 0
        cpu0, t_end = time.process_time(), time.monotonic() + seconds
        while time.monotonic() < t_end:
            try:
                dev.poll(0.05)
            except TransportError:
                break
            s = dev.latest("pole")
            if s.count != last:
                last = s.count
                dev.write("force", [0.0])
                dev.flush(s.t_device_us)
                answered += 1
        cpu = time.process_time() - cpu0
        host = dev.stats()
    proc.send_signal(signal.SIGTERM)
    summary = json.loads(proc.communicate(timeout=10)[0].decode().splitlines()[-1])
    r = summary["rtt_us"]
    return {"p50": r["p50"], "p99": r["p99"], "max": r["max"], "n": r["n"], "sent": summary["sensor_frames"],
            "answered": answered, "lost_to_host": host["seq_gaps"], "lost_to_device": summary["link"]["seq_gaps"],
            "host_faults": host["crc_errors"] + host["cobs_errors"] + host["short_frames"],
            "host_cpu_ms_per_1000": 1000 * cpu / max(answered, 1) * 1000}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    f = floor(a.seconds)
    n = nnos_serial(a.seconds)
    print(f"raw pty echo    rtt p50 {f['p50']:7.1f}  p99 {f['p99']:7.1f}  max {f['max']:8.1f} µs  "
          f"({f['n']} frames, host CPU {f['host_cpu_ms_per_1000']:.1f} ms / 1000)")
    print(f"nnos protocol   rtt p50 {n['p50']:7.1f}  p99 {n['p99']:7.1f}  max {n['max']:8.1f} µs  "
          f"({n['n']} of {n['sent']} frames answered; lost to host {n['lost_to_host']}, to device "
          f"{n['lost_to_device']}; host CPU {n['host_cpu_ms_per_1000']:.1f} ms / 1000)")
    print(f"ratio to floor  p50 {n['p50'] / f['p50']:.2f}  p99 {n['p99'] / f['p99']:.2f}")
    print(json.dumps({"floor": f, "nnos": n}))


if __name__ == "__main__":
    main()
