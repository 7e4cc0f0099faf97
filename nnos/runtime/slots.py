"""A model slot: a plan bound to its own arena and to the board's channels, ready to tick.

The loop holds an active slot and, while a swap or a shadow run is under way, a candidate or a
shadow slot beside it. ``admission`` measures a slot on this device and decides whether it fits
the tick budget, with the figures."""
from __future__ import annotations

import os
from functools import partial

import numpy as np

from nnos_hardware.binding import Binder

from .. import backends  # noqa: F401 - a slot binds its plan through them
from ..errors import BackendError
from ..backends.report import one_line
from ..timing import latency_figures, now_ns
from .realtime import cpus_not_mine


def prebuild(plan, plan_path: str, backend: str):
    """A generator for the loop's slack: builds the cpu backend's object for the plan at
    ``plan_path`` into its cache in a separate process — at normal priority, niced, off the
    loop's CPU (a child of the loop would otherwise inherit SCHED_FIFO and its CPU) — yielding
    until it is done, so that binding the slot afterwards only loads it. Failures are left for
    the binding to report (and auto to fall back from)."""
    if backend not in ("auto", "cpu"):
        return
    from ..backends.cpu import Unsupported, recorded, source
    from ..backends.cpu.toolchain import is_cached
    if recorded(plan):                         # the image's own: nothing to generate (0.45 s of an emulated boot)
        return
    try:
        if is_cached(source(plan)):            # the usual case: the control plane's intake built it
            return
    except Unsupported:
        return                                 # nothing to build: auto runs it on numpy
    import os
    import subprocess
    import sys
    others = cpus_not_mine()

    def calm():
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, others)
        os.nice(10)
    p = subprocess.Popen([sys.executable, "-m", "nnos.backends.cpu", "build", plan_path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=calm)
    while p.poll() is None:
        yield


ACCELERATORS = ("cuda", "vulkan")         # a device that can be lost mid-run


class Slot:
    def __init__(self, model_id: str, plan, board, devices, backend: str = "numpy"):
        board.check_plan(plan)               # bindings must fit: refuses with FILE:LINE otherwise
        self.id, self.plan = model_id, plan
        self.exe = plan.bind(backend)
        self.backend = self.exe.backend
        # on an accelerator, the same model bound on the CPU beside it, verified, ready: a lost
        # device is replaced at the next tick (the loop's accelerator_lost), never recompiled then
        self.spare = _spare(model_id, plan, board, devices) if self.backend in ACCELERATORS else None
        self.passed_over = self.exe.choice["passed_over"]
        self.cpus = model_cpus(self.exe, board.model_cpus)
        self.backend_report = one_line(self.exe) + (f"; {self.cpus}" if board.model_cpus > 1 else "")
        self.binder = Binder(board, devices, self.exe.inputs, self.exe.outputs, push_each_tick=board.infer_every == 1)
        self.outputs = [v.reshape(-1) for v in self.exe.outputs.values()]
        self.inputs = [v.reshape(-1) for v in self.exe.inputs.values()]
        self._zeros = [np.zeros(o.size, o.dtype) for o in self.outputs]
        # finite check without temporaries: x·0 is 0 for finite x and NaN otherwise
        self._finite = [partial(np.dot, o, z) for o, z in zip(self.outputs, self._zeros)]
        self.run = self.exe.run
        self.worker = None                   # asynchronous inference (runtime/inference.py), when the board asks
        # what telemetry shows: the board's first input and output bindings (their labels: Board.labels)
        self.first_input = self.exe.inputs[board.inputs[0].tensor].reshape(-1) if board.inputs else self.inputs[0]
        self.first_output = self.exe.outputs[board.outputs[0].tensor].reshape(-1) if board.outputs else self.outputs[0]

    def close(self) -> None:
        """The slot is let go: its inference worker and its plan's worker threads, if any, end."""
        if self.worker is not None:
            self.worker.stop()
        getattr(self.exe, "close", lambda: None)()
        if self.spare is not None:
            self.spare.close()

    def outputs_finite(self) -> bool:
        for f in self._finite:
            s = f()
            if s != s:              # NaN (inf·0 is NaN too)
                return False
        return True


def model_cpus(exe, wanted: int) -> str:
    """The board's ``model_cpus``: the plan's large steps split between the calling thread (the
    loop's, on its own CPU) and worker threads pinned to the next CPUs the loop does not own.
    What was done, in words (the loop's backend line)."""
    if wanted <= 1:
        return "1 CPU"
    use = getattr(exe, "use_cpus", None)
    if use is None:
        return f"1 CPU (the {exe.backend} backend runs a plan on one thread)"
    mine = len(os.sched_getaffinity(0))
    if mine > 1:                                    # the loop is not pinned (no real-time set-up): nor are they,
        workers = min(wanted, mine) - 1             # and never more threads than CPUs (they spin at barriers)
        return use([-1] * workers) + " (not pinned: the loop is not)"
    others = sorted(cpus_not_mine() - os.sched_getaffinity(0))
    if not others:
        return f"1 CPU (model_cpus = {wanted}, but no CPU is free beside the loop's)"
    said = use(others[:wanted - 1])
    short = f" of the {wanted} asked for" if len(others) < wanted - 1 else ""
    return said + short


def _spare(model_id: str, plan, board, devices) -> Slot:
    try:
        return Slot(model_id, plan, board, devices, "cpu")
    except BackendError:
        return Slot(model_id, plan, board, devices, "numpy")


def measure(slot: Slot, runs: int = 1000, warmup: int = 50):
    """A generator: times ``runs`` calls after ``warmup``, yielding between small batches so the
    loop can keep ticking; its return value is the figures (µs)."""
    for i in range(warmup):
        slot.binder.read_inputs()
        slot.run()
        if i % 10 == 9:
            yield
    times = np.empty(runs, np.int64)
    for i in range(runs):
        t0 = now_ns()
        slot.run()
        times[i] = now_ns() - t0
        if i % 20 == 19:
            yield
    return dict(latency_figures(times), backend=slot.backend)


def admit(figures: dict, budget_ns: int) -> tuple[bool, str]:
    budget_us = budget_ns / 1000.0
    if figures["p999_us"] > budget_us:
        return False, (f"too slow for the tick budget: p99.9 {figures['p999_us']:.1f} µs > budget {budget_us:.1f} µs "
                       f"(p50 {figures['p50_us']:.1f}, p99 {figures['p99_us']:.1f} µs over {figures['runs']} runs "
                       f"on {figures['backend']})")
    return True, (f"admitted: p99.9 {figures['p999_us']:.1f} µs within budget {budget_us:.1f} µs "
                  f"(p50 {figures['p50_us']:.1f}, p99 {figures['p99_us']:.1f})")

