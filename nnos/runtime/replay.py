"""Offline evaluation (``nnos replay RECORDING --model CANDIDATE``): a recording's sensor values
tick by tick into a candidate model, bound by the recorded board, as fast as the backend runs;
its actions compared with the recorded ones channel by channel — max and RMS divergence, the
first tick above a threshold — over the ticks the recorded loop was running (failsafe ticks
wrote safe values, not a model's) after a warm-up (every bound input recorded once, the action
queues filled with the candidate's own chunks); optionally the candidate's actions as a new MCAP.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import deque

import numpy as np

from nnos_hardware.board import load_board
from nnos_hardware.devices import SimulatedDevice
from nnos_hardware.recording import jpeg_frame

from ..compiler import compile
from ..errors import NnosError
from ..plan import load
from .slots import Slot


def read(path: str) -> dict:
    """A recording: its board (TOML text), channel layout, per topic the (ticks, values) arrays,
    and per camera topic its frames as (first tick, uint8 [H, W, 3]) in order."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader
    try:
        with open(path, "rb") as f:
            reader = make_reader(f)
            meta = {m.name: m.metadata for m in reader.iter_metadata()}
            series: dict[str, tuple[list, list]] = {}
            frames: dict[str, list] = {}
            modes: dict[int, str] = {}
            for _, ch, msg in reader.iter_messages():
                m = json.loads(msg.data)
                if ch.topic == "/loop":
                    modes[m["tick"]] = m["mode"]
                elif "values" in m:
                    ticks, values = series.setdefault(ch.topic, ([], []))
                    ticks.append(m["tick"])
                    values.append(m["values"])
                elif m.get("format") == "jpeg":
                    frames.setdefault(ch.topic, []).append((m["tick"], jpeg_frame(m["data"])))
    except (OSError, ValueError, KeyError, McapError) as e:
        raise NnosError(f"{path}: not an nnos MCAP recording ({type(e).__name__}: {e})") from e
    if "nnos.board" not in meta:
        raise NnosError(f"{path}: the recording does not carry its board (recorded without one): pass --board")
    return {"board": meta["nnos.board"]["toml"], "layout": json.loads(meta["nnos.layout"]["channels"]),
            "series": {t: (np.array(k), np.array(v, np.float32)) for t, (k, v) in series.items()}, "modes": modes,
            "frames": frames}


def _board(rec: dict, board_path: str | None):
    if board_path:
        return load_board(board_path)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(rec["board"])
    try:
        return load_board(f.name)
    finally:
        os.unlink(f.name)


def evaluate(path: str, model: str, backend: str = "numpy", threshold: float = 0.05, board_path: str | None = None,
             out: str | None = None) -> dict:
    """The candidate ``model`` (a plan or .onnx) on the recording at ``path``."""
    rec = read(path)
    board = _board(rec, board_path)
    plan = compile(model, images=board.plan_images()) if model.endswith(".onnx") else load(model)
    devices = {d.name: SimulatedDevice(d.name, d.channels, keep_sent=0) for d in board.devices}
    for dev in devices.values():
        dev.open()
    slot = Slot("candidate", plan, board, devices, backend)
    sensors = [(lay, devices[lay["device"]]) for lay in rec["layout"] if lay["kind"] == "sensor"]
    actuators = [lay for lay in rec["layout"] if lay["kind"] == "actuator" and lay["topic"] in rec["series"]]
    missing = [lay["topic"] for lay, _ in sensors if lay["topic"] not in rec["series"] and lay["topic"] not in rec["frames"]]
    bound = {f"/{d}/{c}" for b in board.inputs for d, c in b.channels}
    if bound & set(missing):
        raise NnosError(f"{path}: the recording lacks bound sensor channels {sorted(bound & set(missing))}")
    ticks = np.array(sorted(rec["modes"]), int)
    series = {t: dict(zip(k.tolist(), v)) for t, (k, v) in rec["series"].items()}
    frames = {t: deque(f) for t, f in rec["frames"].items()}
    got = {lay["topic"]: np.zeros((len(ticks), lay["size"]), np.float32) for lay in actuators}
    every, fed, start = board.infer_every, set(), None
    for i, tick in enumerate(ticks):
        for lay, dev in sensors:
            value = series.get(lay["topic"], {}).get(int(tick))
            if value is not None:
                dev.feed(lay["channel"], value)
                fed.add(lay["topic"])
            queue = frames.get(lay["topic"])
            while queue and queue[0][0] <= tick:           # the frame the loop read at this tick
                dev.feed(lay["channel"], queue.popleft()[1])
                fed.add(lay["topic"])
        if i % every == 0:                            # asynchronous boards: a chunk every k ticks
            if start is None and bound <= fed:
                start = i
            slot.binder.read_inputs()
            slot.run()
            if every > 1:
                slot.binder.push_chunks()
        slot.binder.write_outputs()
        for lay in actuators:
            got[lay["topic"]][i] = devices[lay["device"]].commands[lay["channel"]].reshape(-1)
    running = np.array([rec["modes"].get(int(t)) in ("running", "probation") for t in ticks], bool)
    # the warm-up is not compared: ticks before every bound input was recorded, and those whose
    # action queues still blend chunks the live loop inferred before the recording began
    warm = len(ticks) if start is None else start + slot.binder.longest_chunk
    running[:warm] = False
    report = {"recording": path, "model": model, "ticks": int(len(ticks)), "compared_ticks": int(running.sum()),
              "warmup_ticks": int(min(warm, len(ticks))), "threshold": threshold, "channels": {}}
    for lay in actuators:
        recorded = np.array([series[lay["topic"]].get(int(t), np.full(lay["size"], np.nan)) for t in ticks], np.float32)
        diff = np.nan_to_num(np.abs(got[lay["topic"]] - recorded), nan=0.0)[running & ~np.isnan(recorded).any(axis=1)]
        above = np.nonzero(diff.max(axis=1) > threshold)[0] if diff.size else np.zeros(0, int)
        report["channels"][lay["topic"]] = {
            "max": float(diff.max()) if diff.size else 0.0, "rms": float(np.sqrt((diff ** 2).mean())) if diff.size else 0.0,
            "first_above": int(ticks[running][above[0]]) if len(above) else None, "ticks_above": int(len(above))}
    if out:
        _write(out, ticks, got, rec_layout=actuators)
    return report


def _write(out: str, ticks, got: dict, rec_layout: list) -> None:
    from mcap.writer import Writer
    with open(out, "wb") as f:
        w = Writer(f)
        w.start(profile="", library="nnos replay")
        schema = w.register_schema("nnos.Channel", "jsonschema", json.dumps(
            {"type": "object", "properties": {"tick": {"type": "integer"}, "values": {"type": "array"}}}).encode())
        for lay in rec_layout:
            cid = w.register_channel(lay["topic"], "json", schema)
            for i, tick in enumerate(ticks):
                w.add_message(cid, log_time=int(tick), publish_time=int(tick),
                              data=json.dumps({"tick": int(tick), "values": got[lay["topic"]][i].tolist()}).encode())
        w.finish()
