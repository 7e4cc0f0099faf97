"""``auto``'s choice by measurement: every backend that built and passed verification runs the
plan on the same sample inputs, interleaved in a few short rounds, and the fastest p50 runs it
(the others are dropped, freeing their device memory). The choice says each one's p50/p99 and
why the winner won; on an SBC a 0.5 µs MLP stays on the CPU, a 20 ms vision model goes to the GPU."""
from __future__ import annotations

import numpy as np

from ..errors import BackendError
from ..plan.sample import sample_inputs
from ..timing import latency_figures, now_ns

ROUNDS, ROUND_NS, MIN_CALLS = 3, 10_000_000, 3       # per candidate: ≥ 3 calls and ≥ 10 ms a round


def timed(exes: dict, plan) -> dict:
    """name → {"p50_us", "p99_us", "runs"}: the candidates measured interleaved, round by round."""
    feeds = sample_inputs(plan)
    for exe in exes.values():
        for name, v in feeds.items():
            np.copyto(exe.inputs[name], v)
        exe.run()                                     # warm: caches, clocks, a first-call upload
    times = {name: [] for name in exes}
    for r in range(1, ROUNDS + 1):
        for name, exe in exes.items():
            run, start, out = exe.run, now_ns(), times[name]
            while len(out) < MIN_CALLS * r or now_ns() - start < ROUND_NS:
                t0 = now_ns()
                run()
                out.append(now_ns() - t0)
    figures = {}
    for name, ts in times.items():
        f = latency_figures(np.array(ts, np.int64))
        figures[name] = {"p50_us": round(f["p50_us"], 2), "p99_us": round(f["p99_us"], 2), "runs": f["runs"]}
    return figures


def fastest(built: dict, passed: dict, plan):
    """The executable auto runs: the fastest p50 of ``built`` (name → verified executable)."""
    if not built:
        raise BackendError(f"no backend can run this plan: {passed}")
    if len(built) == 1:
        (name, exe), = built.items()
        exe.choice = {"backend": name, "asked": "auto", "passed_over": passed, "measured": {},
                      "why": "the only backend that runs this plan here"}
        return exe
    figures = timed(built, plan)
    name = min(figures, key=lambda n: (figures[n]["p50_us"], figures[n]["p99_us"]))
    others = ", ".join(f"{n} {f['p50_us']:g} µs" for n, f in figures.items() if n != name)
    exe = built[name]
    exe.choice = {"backend": name, "asked": "auto", "passed_over": passed, "measured": figures,
                  "why": f"the fastest measured here: p50 {figures[name]['p50_us']:g} µs against {others}"}
    return exe
