"""The one module that owns time: clocks, period constants, and the rate keeper.

All loop times are integers of nanoseconds on CLOCK_MONOTONIC (time.monotonic_ns, the clock
time.sleep and the kernel's timers use). The rate keeper sleeps to absolute deadlines, so
lateness never accumulates, and says how late each wake-up was.
"""
from __future__ import annotations

import ctypes
import time

NS_PER_S = 1_000_000_000
MIN_RATE_HZ, MAX_RATE_HZ = 1, 1000
DEFAULT_SLACK_MARGIN_NS = 150_000       # background work stops this long before the next tick
PR_SET_TIMERSLACK = 29

now_ns = time.monotonic_ns


def percentiles(values, qs=(50, 99), suffix: str = "") -> dict:
    """{"p50": …, "p99": …} (keys ``p<q><suffix>``, 99.9 → "p999") of ``values``: the one
    percentile computation behind every figure nnos reports."""
    import numpy as np
    v = np.asarray(values, dtype=np.float64)
    return {f"p{str(q).replace('.', '')}{suffix}": float(np.percentile(v, q)) for q in qs}


def latency_figures(times_ns) -> dict:
    """Call times (ns, an int64 array) as the figures every measurement reports, in µs: the
    one definition that `nnos bench`, the intake, admission and the benchmarks share."""
    import numpy as np
    us = np.asarray(times_ns) / 1000.0
    return {"runs": int(us.size), **percentiles(us, (50, 99, 99.9), "_us"), "max_us": float(us.max()),
            "mean_us": float(us.mean())}


def period_ns(rate_hz: float) -> int:
    if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise ValueError(f"rate {rate_hz} Hz outside {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz")
    return int(round(NS_PER_S / rate_hz))


def set_timer_slack(ns: int = 1) -> bool:
    """Linux rounds sleeps up by the timer slack (50 µs by default): ask for 1 ns."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class RateKeeper:
    """Fixed-rate ticks on absolute deadlines.

    ``wait()`` sleeps until the next deadline and returns the lateness of the wake-up (ns).
    A tick that starts more than a whole period late is a *miss*: the keeper skips the missed
    deadlines (keeping the phase) instead of running a burst of catch-up ticks. With
    ``spin_ns``, it sleeps until that long before the deadline and spins the rest: the wake-up
    latency of the kernel (tens of µs here) is absorbed by the spin.
    """

    def __init__(self, rate_hz: float, start_ns: int | None = None, spin_ns: int = 0):
        self.period = period_ns(rate_hz)
        self.spin = min(spin_ns, self.period // 4)     # the last stretch before a deadline is spun
        self.deadline = (now_ns() if start_ns is None else start_ns) + self.period
        self.ticks = 0
        self.misses = 0
        self.lateness = 0

    def remaining_ns(self) -> int:
        return self.deadline - now_ns()

    def wait(self) -> int:
        """Sleep to the next deadline; returns how late this wake-up is (ns, ≥ 0 usually)."""
        rem = self.deadline - self.spin - now_ns()
        if rem > 0:
            time.sleep(rem / NS_PER_S)
        deadline = self.deadline
        while now_ns() < deadline:                     # a kernel wake-up is tens of µs late: spin
            pass
        late = now_ns() - self.deadline
        self.lateness = late
        if late >= self.period:                    # whole periods lost: count them, keep the phase
            skipped = late // self.period
            self.misses += skipped
            self.deadline += skipped * self.period
        self.deadline += self.period
        self.ticks += 1
        return late
