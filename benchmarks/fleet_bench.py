"""The fleet's costs on this machine (services/fleet's devices: `nnos up` on the simulated
cart-pole, each in its own network namespace):

  --scrape    one device: the size of /metrics, the control plane's CPU time per scrape, and the
              loop's lateness (p99, max, misses) over a window scraped every second against the
              same window unscraped, interleaved
  --rollout   eight devices: the wall time of a canary rollout of a new model (services/ansible)
  --scale     the largest N (8, 16, 24, …) at which every device's loop keeps its rate over a
              window: no missed tick and a measured rate within 1 % of the board's

    sudo .venv/bin/python benchmarks/fleet_bench.py --scrape --rollout --scale [--window 30]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "services", "fleet"))

import fleet as fleet_mod  # noqa: E402
from nnos.telemetry import TelemetryReader  # noqa: E402


def loop_window(dev, seconds: float, during=lambda: None) -> dict:
    """The loop's lateness and misses over ``seconds`` (read from its telemetry ring, not its API)."""
    path = os.path.join(dev.data, "run", "telemetry")
    r = TelemetryReader(path)
    try:
        c0 = r.counters()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            during()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
        c1 = r.counters()
        n = int(c1["ticks"] - c0["ticks"])
        recs = r.records(min(n, 4000))
    finally:
        r.close()
    late = recs["lateness_ns"] / 1000.0
    span = (int(recs["t_ns"][-1]) - int(recs["t_ns"][0])) / 1e9 if len(recs) > 1 else 0
    return {"ticks": n, "misses": int(c1["misses"] - c0["misses"]), "p99_us": float(np.percentile(late, 99)),
            "max_us": float(late.max()), "rate_hz": (len(recs) - 1) / span if span else 0.0,
            "declared_hz": c1["rate_mhz"] / 1000.0}


def fleet_window(devices, seconds: float) -> list[dict]:
    """Every device's misses and measured rate over the same ``seconds``."""
    readers = [TelemetryReader(os.path.join(d.data, "run", "telemetry")) for d in devices]
    try:
        before = [r.counters() for r in readers]
        time.sleep(seconds)
        out = []
        for r, c0 in zip(readers, before):
            c1 = r.counters()
            recs = r.records(min(int(c1["ticks"] - c0["ticks"]), 4000))
            span = (int(recs["t_ns"][-1]) - int(recs["t_ns"][0])) / 1e9 if len(recs) > 1 else 0
            restarted = c1["pid"] != c0["pid"] or c1["ticks"] < c0["ticks"]        # its watchdog restarted it
            out.append({"misses": 0 if restarted else int(c1["misses"] - c0["misses"]), "restarted": restarted,
                        "declared_hz": c1["rate_mhz"] / 1000.0, "rate_hz": (len(recs) - 1) / span if span else 0.0})
        return out
    finally:
        for r in readers:
            r.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_cost(workdir: str, window: float) -> dict:
    f = fleet_mod.Fleet(1, workdir, prometheus=False).start()
    try:
        dev = f.devices[0]
        with open(os.path.join(dev.data, "run", "children.json")) as fh:
            api_pid = json.load(fh)["control-plane"][0]
        req = urllib.request.Request(dev.url + "/metrics", headers={"Authorization": f"Bearer {f.scrape_token}"})

        def scrape() -> int:
            with urllib.request.urlopen(req, timeout=5) as r:
                return len(r.read())
        size = scrape()
        c0, n = cpu_seconds(api_pid), 200
        for _ in range(n):
            scrape()
        per = (cpu_seconds(api_pid) - c0) / n
        rounds = []
        for _ in range(2):                          # interleaved: quiet, scraped, quiet, scraped
            rounds.append(("quiet", loop_window(dev, window)))
            rounds.append(("scraped 1/s", loop_window(dev, window, scrape)))
        return {"bytes": size, "cpu_ms_per_scrape": per * 1000, "windows": rounds}
    finally:
        f.stop()


def rollout(workdir: str) -> float:
    f = fleet_mod.Fleet(8, workdir).start()
    try:
        import onnx
        m = onnx.load(os.path.join(ROOT, "models", "cartpole", "cartpole.onnx"))
        m.doc_string = "fleet bench: another model"                 # other bytes: a real upload and activation
        model = os.path.join(workdir, "next.onnx")
        onnx.save(m, model)
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "services", "ansible", "ansible.cfg"))
        t0 = time.monotonic()
        r = subprocess.run(["ansible-playbook", "-i", os.path.join(f.workdir, "inventory.json"),
                            os.path.join(ROOT, "services", "ansible", "rollout.yml"), "-e", f"model={model}",
                            "-e", "probation_s=2", "-e", f"lock={workdir}/lock"], capture_output=True, text=True, env=env)
        took = time.monotonic() - t0
        if r.returncode != 0:
            raise SystemExit(f"the rollout failed:\n{r.stdout[-3000:]}")
        return took
    finally:
        f.stop()


def scale(workdir: str, window: float, sizes: list[int]) -> list[dict]:
    out = []
    for n in sizes:
        f = fleet_mod.Fleet(n, os.path.join(workdir, f"n{n}"), prometheus=False)
        try:
            t0 = time.monotonic()
            f.start(timeout=600)
            started = time.monotonic() - t0
            time.sleep(5)
            after = fleet_window(f.devices, window)
        finally:
            f.stop()
        misses = sum(a["misses"] for a in after)
        restarts = sum(a["restarted"] for a in after)
        worst = min(a["rate_hz"] / a["declared_hz"] for a in after)
        ok = misses == 0 and restarts == 0 and worst > 0.99
        out.append({"n": n, "start_s": started, "misses": misses, "restarts": restarts, "worst_rate_ratio": worst, "ok": ok})
        print(f"  N={n:3d}: started in {started:5.1f} s; misses {misses}, loops restarted {restarts}; slowest loop at "
              f"{100 * worst:.1f} % of its rate {'✓' if ok else '✗'}")
        if not ok:
            break
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scrape", action="store_true")
    ap.add_argument("--rollout", action="store_true")
    ap.add_argument("--scale", action="store_true")
    ap.add_argument("--window", type=float, default=30.0, help="seconds per measured window")
    ap.add_argument("--sizes", default="8,16,24,32,48", help="fleet sizes --scale tries, in order")
    a = ap.parse_args()
    if not (a.scrape or a.rollout or a.scale):
        ap.error("say --scrape, --rollout and/or --scale")
    if os.geteuid() != 0:
        raise SystemExit("the fleet needs root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as d:
        if a.scrape:
            s = scrape_cost(os.path.join(d, "scrape"), a.window)
            print(f"scrape: /metrics {s['bytes']} bytes; control plane CPU {s['cpu_ms_per_scrape']:.2f} ms per scrape")
            for what, w in s["windows"]:
                print(f"  {what:12s} {w['ticks']} ticks: misses {w['misses']}, lateness p99 {w['p99_us']:.0f} µs, "
                      f"max {w['max_us']:.0f} µs")
        if a.rollout:
            print(f"rollout: a new model to 8 devices, canary first: {rollout(os.path.join(d, 'rollout')):.1f} s")
        if a.scale:
            print(f"scale: every loop at its rate over {a.window:.0f} s")
            res = scale(os.path.join(d, "scale"), a.window, [int(x) for x in a.sizes.split(",")])
            good = [r["n"] for r in res if r["ok"]]
            print(f"  the largest N that kept every loop at its rate: {max(good) if good else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
