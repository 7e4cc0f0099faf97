"""A servo bus tick: one sync write of 6 goals + one sync read of 6 positions (the SO-101's),
nnos's driver against the vendor's SDK doing the same transactions from Python, in the same
run, against the same simulated bus on a pty — then the highest rate the driver's bus thread
keeps every tick fresh at, and the SO-101 board's loop at 100 Hz.

    python benchmarks/bus_bench.py [--vendor feetech|dynamixel] [--n 2000] [--seconds 10]

Prints per transaction p50/p99 µs (the pty has no baud rate: the bytes' time on a 1 Mbaud wire,
10 µs a byte, is printed beside them), bytes per tick, the ratio nnos / SDK (target ≤ 1), the
highest loop rate with zero stale ticks, and the 100 Hz loop's misses (target 0).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nnos.timing import RateKeeper, percentiles  # noqa: E402
from nnos_hardware.calibration import JointCalibration  # noqa: E402
from nnos_hardware.devices.servo_bus import ServoBusDevice  # noqa: E402

IDS = [1, 2, 3, 4, 5, 6]
JOINTS = dict(zip(["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"], IDS))
MODEL = {"feetech": "sts3215", "dynamixel": "xl430-w250"}
ROUNDS = 4


KOCH = "xl430-w250,xl430-w250,xl330-m288,xl330-m288,xl330-m288,xl330-m288"


def start_bus(vendor: str, models: str | None = None):
    p = subprocess.Popen([sys.executable, "-m", "nnos_hardware.sim", f"{vendor}-arm", "--servos", "6",
                          "--model", models or MODEL[vendor]], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return p, json.loads(p.stdout.readline())["port"]


SPIN_US = 200.0


def nnos_transactions(vendor: str, port: str, n: int) -> tuple[np.ndarray, int]:
    """The driver's own transaction (sync write + sync read), called as its bus thread does."""
    dev = ServoBusDevice("arm", port, vendor, MODEL[vendor], JOINTS, spin_us=SPIN_US)
    dev.open()
    try:
        dev.set_calibration({j: JointCalibration(i, 2048, 1, 1000, 3000) for j, i in JOINTS.items()})
        while not dev.poll():
            dev.flush()
            time.sleep(0.01)
        time.sleep(0.05)
        dev.arm()
        dev._stop = True                                  # the thread out of the way: time the transaction itself
        dev._kick.set()
        dev._thread.join()
        times = np.empty(n)
        goals = dev.commands["goal"]
        for k in range(n):
            goals[:] = 0.1 * np.sin(k / 50)
            dev.flush()
            t0 = time.perf_counter()
            with dev.link.lock:
                dev._transaction()
            times[k] = time.perf_counter() - t0
        missing = sum(s.missing for s in dev.servo_stats.values())
        return times * 1e6, missing
    finally:
        dev.close()


def sdk_transactions(vendor: str, port_path: str, n: int) -> np.ndarray:
    if vendor == "feetech":
        import scservo_sdk as sdk
        ph_proto, goal_addr, pos_addr, size = 0, 42, 56, 2
    else:
        import dynamixel_sdk as sdk
        ph_proto, goal_addr, pos_addr, size = 2.0, 116, 132, 4
    port = sdk.PortHandler(port_path)
    port.openPort()
    port.setBaudRate(1_000_000)
    ph = sdk.PacketHandler(ph_proto)
    writer = sdk.GroupSyncWrite(port, ph, goal_addr, size)
    reader = sdk.GroupSyncRead(port, ph, pos_addr, size)
    for sid in IDS:
        writer.addParam(sid, list((2048).to_bytes(size, "little")))
        reader.addParam(sid)
    times, failed = np.empty(n), 0
    try:
        for k in range(n):
            g = 2048 + int(60 * np.sin(k / 50))
            for sid in IDS:
                writer.changeParam(sid, list(g.to_bytes(size, "little")))
            t0 = time.perf_counter()
            writer.txPacket()
            failed += reader.txRxPacket() != sdk.COMM_SUCCESS
            times[k] = time.perf_counter() - t0
    finally:
        port.closePort()
    if failed:
        print(f"  SDK: {failed} of {n} sync reads failed")
    return times * 1e6


def wire_bytes(vendor: str) -> int:
    from nnos_hardware.protocol import dynamixel as dx
    from nnos_hardware.protocol import feetech as ft
    proto, size, addr = (ft, 2, (42, 56)) if vendor == "feetech" else (dx, 4, (116, 132))
    status = len(proto.packet(1, 0, bytes(size + 1))) if vendor == "feetech" else len(dx.status(1, 0, bytes(size)))
    return (len(proto.sync_write(addr[0], size, {i: bytes(size) for i in IDS})) + len(proto.sync_read(addr[1], size, IDS))
            + 6 * status)


def fresh_rate(vendor: str, port: str, rates=(100, 200, 300, 500, 750, 1000), seconds: float = 2.0) -> dict:
    """Per rate: ticks whose position was not updated since the tick before (the bus thread,
    kicked by each flush, did not finish a transaction within one period)."""
    dev = ServoBusDevice("arm", port, vendor, MODEL[vendor], JOINTS)
    dev.open()
    out = {}
    try:
        for rate in rates:
            keeper, stale, n = RateKeeper(rate), 0, int(rate * seconds)
            dev.flush()
            keeper.wait()
            for _ in range(n):
                keeper.wait()
                stale += dev.poll() == 0
                dev.flush()
            out[rate] = stale
    finally:
        dev.close()
    return out


def loop_at_100hz(vendor: str, seconds: float, control: bool = False) -> dict:
    """The so101 (or koch) board's loop in its own process, its tracking policy armed; with
    ``control``, the same loop over an in-process simulated arm (no bus): what this host's own
    stalls cost any loop in the same run."""
    board = "so101" if vendor == "feetech" else "koch"
    code = f"""
import json, sys, time
sys.path.insert(0, {ROOT!r})
from tests.support.arms import write_board, calibration_doc
from nnos_hardware import calibration as cal
from nnos_hardware.devices.factory import make_devices
from nnos.runtime import realtime
from nnos.runtime.loop import Loop, LoopConfig
from nnos.store import ModelStore
from nnos.telemetry import TelemetryWriter
import pathlib
tmp = pathlib.Path({tempfile.mkdtemp()!r})
b = write_board(tmp, {board!r}, path=sys.argv[1])
devs = make_devices(b)
if sys.argv[2] == "control":
    from nnos_hardware.devices import SimulatedDevice
    devs = {{"arm": SimulatedDevice("arm", b.device("arm").channels, keep_sent=0,
                                    source=lambda t: {{"position": devs["arm"].commands["goal"]}})}}
for d in devs.values(): d.open()
store = ModelStore(str(tmp / "data"))
cal.save(store.data_dir, b, cal.parse({{"board": b.name, **calibration_doc(b)}}, b, lambda d: 4096))
realtime.setup()
tel = TelemetryWriter(str(tmp / "tel"))
loop = Loop(b, devs, store, tel, LoopConfig(), log=lambda m: None)
if sys.argv[2] != "control":
    loop.apply_calibration()
"""
    code += f"""
from tests.support.policies import store_model
store.activate(store_model(store, b.model), "bench")
loop.load_initial()
loop.run(None, 1.0)                          # the start-up failsafe (no reading yet) clears
before = {{k: int(tel.c[i]) for k, i in tel.idx.items()}}
if sys.argv[2] != "control":
    loop.arm("arm")
loop.run(None, {seconds})
c = {{k: int(tel.c[i]) - before[k] for k, i in tel.idx.items()}}
print(json.dumps({{"ticks": c["ticks"], "misses": c["misses"], "failsafe_entries": c["failsafe_entries"],
                  "overruns": c["overruns"], "reason": loop.safety.reason}}))
loop.shutdown()
"""
    p, port = start_bus(vendor, None if vendor == "feetech" else KOCH)
    try:
        r = subprocess.run([sys.executable, "-c", code, port, "control" if control else "bus"], cwd=ROOT,
                           capture_output=True, text=True, timeout=seconds + 120)
    finally:
        p.terminate()
        p.wait()
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    global SPIN_US
    ap = argparse.ArgumentParser()
    ap.add_argument("--vendor", choices=list(MODEL), default="feetech")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--spin-us", type=float, default=SPIN_US, help="the driver's poll before it sleeps")
    ap.add_argument("--no-loop", action="store_true", help="skip the 100 Hz loop runs")
    a = ap.parse_args()
    SPIN_US = a.spin_us
    p, port = start_bus(a.vendor)
    ours, theirs, missing, cpu = [], [], 0, {"nnos": 0.0, "sdk": 0.0}
    try:
        for _ in range(ROUNDS):                                    # interleaved: the host's noise hits both
            t = time.process_time()
            o, m = nnos_transactions(a.vendor, port, a.n // ROUNDS)
            cpu["nnos"] += time.process_time() - t
            t = time.process_time()
            theirs.append(sdk_transactions(a.vendor, port, a.n // ROUNDS))
            cpu["sdk"] += time.process_time() - t
            ours.append(o)
            missing += m
        rates = fresh_rate(a.vendor, port)
    finally:
        p.terminate()
        p.wait()
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    po, pt = percentiles(ours), percentiles(theirs)
    nb = wire_bytes(a.vendor)
    print(f"{a.vendor} bus, 6 servos: sync write 6 goals + sync read 6 positions, {nb} bytes a tick "
          f"({nb * 10} µs on a 1 Mbaud wire, not in the figures: a pty has no baud rate)")
    print(f"  nnos driver   p50 {po['p50']:8.1f} µs  p99 {po['p99']:8.1f} µs  (missing answers: {missing})")
    print(f"  vendor SDK    p50 {pt['p50']:8.1f} µs  p99 {pt['p99']:8.1f} µs")
    print(f"  ratio nnos / SDK: p50 {po['p50'] / pt['p50']:.2f}  p99 {po['p99'] / pt['p99']:.2f}  (target ≤ 1); "
          f"CPU time a transaction: nnos {cpu['nnos'] / len(ours) * 1e6:.0f} µs, SDK {cpu['sdk'] / len(theirs) * 1e6:.0f} µs "
          f"(it polls the port in a busy loop; nnos polls {SPIN_US:g} µs, then sleeps in select)")
    ok = [r for r, stale in rates.items() if stale == 0]
    print(f"  stale ticks by loop rate: {rates}; highest rate with none: {max(ok) if ok else 'none'} Hz")
    name = "so101" if a.vendor == "feetech" else "koch"
    for control in () if a.no_loop else (False, True, False):                           # the control between two bus runs
        loop = loop_at_100hz(a.vendor, a.seconds, control)
        what = "no bus (control)" if control else "armed, tracking"
        print(f"  {name} board at 100 Hz for {a.seconds:g} s, {what}: {loop['ticks']} ticks, {loop['misses']} missed, "
              f"{loop['overruns']} overruns, {loop['failsafe_entries']} failsafe entries (target 0 missed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
