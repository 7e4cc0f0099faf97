"""`nnos up`: validate the board, provision the store on first start, run the process table,
and show a live one-line status."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from hardware.board import load_board

from ..store import ModelStore
from ..telemetry import TelemetryReader
from .manager import Manager
from .table import Context, table

DEFAULT_BOARD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "hardware", "boards", "cartpole-sim.toml")


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def provision(board, store: ModelStore) -> None:
    """First start: no active model yet, so compile and store the board's default model."""
    if store.state()["active"] or not board.model:
        return
    from ..compiler import compile
    plan = compile(board.model)
    board.check_plan(plan)
    from ..controlplane.intake import measure
    mid = store.put(plan.to_bytes(), {"format": "onnx (the board's default)", "source": board.model,
                                      "provisioned": True, "latency": measure(plan), "ops": plan.meta["ops"]})
    store.activate(mid, f"provisioned from the board's default model {os.path.basename(board.model)}")
    log(f"supervisor: provisioned {os.path.basename(board.model)} as model {mid[:12]}")


def status_line(run: str, manager: Manager | None = None) -> str:
    path = os.path.join(run, "telemetry")
    if not os.path.exists(path):
        return "waiting for the loop…"
    try:
        r = TelemetryReader(path)
    except (ValueError, OSError):
        return "waiting for the loop…"
    try:
        c = r.counters()
        period = max(1, c["period_ns"])
        recs = r.records(int(1e9 // period))
    finally:
        r.close()
    if len(recs) < 2:
        return f"mode {c['mode']} | waiting for ticks"
    span = (int(recs["t_ns"][-1]) - int(recs["t_ns"][0])) / 1e9
    rate = (len(recs) - 1) / span if span > 0 else 0.0
    late = np.percentile(recs["lateness_ns"], 99) / 1000
    restarts = sum(p["restarts"] for p in manager.status().values()) if manager else 0
    mode = c["mode"] + (f" ({c['failsafe_reason']})" if c["mode"] == "failsafe" else "")
    return (f"{rate:6.1f} Hz | late p99 {late:6.0f} µs | missed {c['misses']} | {mode:<10} | "
            f"model {c['active'][:12] or '-'} | ticks {c['ticks']} | swaps {c['swaps']} | restarts {restarts}")


def up(board_path: str, data: str, duration: float | None = None, show_status: bool = True) -> int:
    board = load_board(board_path)
    os.makedirs(data, exist_ok=True)
    store = ModelStore(data)
    provision(board, store)
    run = os.path.join(data, "run")
    os.makedirs(run, exist_ok=True)
    ctx = Context(os.path.abspath(board_path), os.path.abspath(data), board, run)
    manager = Manager(ctx, table(ctx), log=log, stdout=subprocess.DEVNULL)
    log(f"supervisor: board {board.name} at {board.rate_hz:g} Hz; data in {data}; "
        f"processes: {', '.join(s.name for s in table(ctx) if s.run_if(ctx))}")
    last = [0.0]
    tty = sys.stdout.isatty()

    def show(m):
        if show_status and time.monotonic() - last[0] > 0.5:
            last[0] = time.monotonic()
            line = status_line(run, m)
            sys.stdout.write(("\r\033[K" + line) if tty else line + "\n")
            sys.stdout.flush()
    manager.run(duration, on_tick=show)
    if tty and show_status:
        sys.stdout.write("\n")
    return 0

