"""Generated code runs in a forked child: a crash there fails the test with the signal instead
of killing the suite."""
from __future__ import annotations

import multiprocessing

import numpy as np

import nnos
from nnos.backends import prepare


def _child(conn, plan_bytes, feeds, backend):
    try:
        exe = prepare(nnos.Plan.from_bytes(plan_bytes), backend)
    except Exception as e:                      # noqa: BLE001 - reported to the parent
        conn.send(("refused", str(e)))
        return
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    conn.send(("ran", {k: np.array(v) for k, v in exe.outputs.items()}))


def run_in_child(plan, feeds: dict, backend: str = "cpu", timeout: float = 120) -> tuple[str, object]:
    """("ran", outputs) or ("refused", the reason the backend gave). ``timeout`` is for an idle
    machine: it is scaled to this one's speed and load (two loaded-run children timed out)."""
    from tests.support.timing import scaled
    timeout = scaled(timeout)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(child, plan.to_bytes(), feeds, backend))
    p.start()
    child.close()
    try:            # read before joining: a large result fills the pipe until it is read
        result = parent.recv() if parent.poll(timeout) else None
    except EOFError:
        result = None
    p.join(10)
    if p.exitcode != 0 or result is None:
        signal = f"signal {-p.exitcode}" if p.exitcode is not None and p.exitcode < 0 else "an error or a timeout"
        raise AssertionError(f"the generated code's child exited with {p.exitcode} ({signal})")
    return result
