"""Tests that hold on a busy machine: deadlines scaled to how fast this machine is right now,
waits on events instead of fixed windows, and retries of windows a host stall spoiled — each
retry reported at the end of the run, never hidden.

    scaled(60)                     60 s on an idle machine, more on a slow or loaded one
    wait_until(cond, 30, "what")   poll ``cond`` until true (deadline scaled), else fail naming what
    with stall_retries("swap window", 3) as attempt: ...   (see StallRetries)
"""
from __future__ import annotations

import json
import os
import time

REFERENCE_S = 0.05          # the probe's time on one idle core of a 2024 x86 server
_speed: float | None = None


def _probe() -> float:
    t0 = time.perf_counter()
    n = 0
    for i in range(600_000):
        n += i & 7
    return time.perf_counter() - t0


def factor() -> float:
    """How much longer than on an idle reference machine things take here now (≥ 1): the
    CPU's own speed (a fixed workload, best of three, measured once) times the load on it."""
    global _speed
    if _speed is None:
        _speed = max(1.0, min(_probe() for _ in range(3)) / REFERENCE_S)
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return min(20.0, _speed * max(1.0, load))


def scaled(seconds: float) -> float:
    return seconds * factor()


def wait_until(cond, seconds: float, what: str, every: float = 0.05, context=lambda: "", ignore=()):
    """``cond()``'s first true value, polled every ``every`` s until a deadline of
    ``scaled(seconds)`` — the one wait every test uses. ``ignore``: exceptions that mean "not
    yet" (a server still starting); ``context()`` joins the failure message (a log's tail)."""
    limit = scaled(seconds)
    deadline = time.monotonic() + limit
    while True:
        try:
            got = cond()
        except ignore:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            extra = context()
            raise AssertionError(f"timed out after {limit:.0f} s waiting for {what}" + (f"\n{extra}" if extra else ""))
        time.sleep(every)


def report_path() -> str:
    """Set by the test run's controller (tests/support/fixtures.py) for all its workers."""
    return os.environ.get("NNOS_TEST_RETRY_LOG") or os.path.join("/tmp", f"nnos-test-retries-{os.getpid()}.jsonl")


def report_retry(test: str, why: str) -> None:
    """One line per retry that hid a host stall; the run's summary counts them."""
    with open(report_path(), "a") as f:
        f.write(json.dumps({"test": test, "why": why[:200], "t": time.time()}) + "\n")


def read_retries() -> list[dict]:
    try:
        with open(report_path()) as f:
            return [json.loads(x) for x in f if x.strip()]
    except (OSError, ValueError):
        return []


def retried(attempts: int, test: str, run, stalled):
    """``run()`` up to ``attempts`` times while ``stalled(result)`` names a host stall (a reason
    string; falsy when the window was clean); each retry is reported. Returns the last result."""
    for i in range(attempts):
        result = run()
        why = stalled(result)
        if not why or i == attempts - 1:
            return result
        report_retry(test, why)
    return result
