"""Asynchronous inference (the board's ``infer_every = k``): the policy runs every k ticks on a
worker thread — off the loop's CPU where there is another, below the loop's priority where
there is not — while the loop keeps executing queued actions (hardware/action_queue.py) at the
full rate. The plan's compiled code releases the GIL, so a 30 ms policy never delays a tick.

Each tick (``step``): a finished inference's chunk goes into the queue (a NaN one is a fault);
when one is due, the inputs are bound and the worker started — unless the last one is still
running: then the queue runs on and the late inference is counted. A queue that runs dry is a
fault (failsafe). Admission measures the policy on its worker against k ticks' budget
(``measure``); a new model's first chunk is computed before its swap (``warm``), so the swap
stays hitless.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import BackendError
from ..timing import latency_figures, now_ns
from . import realtime


class Worker:
    """``run`` on a thread of its own, one call per ``start``."""

    def __init__(self, run, name: str):
        self.run = run
        self.go = threading.Event()
        self.busy = self.done = False
        self.alive = True
        self.took_ns = 0
        self.next_tick = 0                 # the tick the next inference is due
        self.started_tick = 0              # ... and the one the running one read its inputs at
        self.late_counted = False
        self.error = None                  # a backend's failure (its device lost), for the loop to act on
        self.thread = threading.Thread(target=self._main, name=f"infer-{name[:8]}", daemon=True)
        self.thread.start()

    def start(self) -> None:
        self.busy, self.done = True, False
        self.go.set()

    def stop(self) -> None:
        self.alive = False
        self.go.set()

    def _main(self) -> None:
        try:                               # this thread only: never competes with the loop for its CPU
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            others = realtime.cpus_not_mine()
            if others:
                os.sched_setaffinity(0, others)
        except (OSError, AttributeError):
            pass
        while self.alive:
            if not self.go.wait(0.5):
                continue
            self.go.clear()
            if not self.alive:
                break
            t = now_ns()
            try:
                self.run()
            except BackendError as e:
                self.error = e
            self.took_ns = now_ns() - t
            self.done = True


def worker(slot) -> Worker:
    if slot.worker is None:
        slot.worker = Worker(slot.run, slot.id)
    return slot.worker


def step(loop, slot, every: int) -> bool:
    """This tick's part of asynchronous inference; True when a finished chunk is not finite."""
    w, bad = worker(slot), False
    if w.done and w.error is not None:             # its device is gone: the spare takes over
        w.busy = w.done = False
        loop.accelerator_lost(slot, w.error)
        return True
    if w.done:
        w.busy = w.done = False
        loop.tel.add("inferences")
        loop.tel.set("inference_ns", w.took_ns)
        if slot.outputs_finite():
            slot.binder.push_chunks(loop.tick_no - w.started_tick)     # its first rows' ticks have passed
        else:
            bad = True
    if loop.tick_no >= w.next_tick:
        if w.busy:
            if not w.late_counted:
                loop.tel.add("late_inferences")
                w.late_counted = True
        else:
            slot.binder.read_inputs()
            w.start()
            w.started_tick, w.next_tick, w.late_counted = loop.tick_no, loop.tick_no + every, False
    return bad


def measure(slot, runs: int):
    """A generator for the loop's slack: ``runs`` inferences on the worker, one at a time, the
    loop ticking while each runs; returns the figures (µs) as slots.measure does."""
    w, times = worker(slot), np.empty(runs, np.int64)
    for i in range(runs + 1):                  # the first one warms up
        w.start()
        while not w.done:
            yield
        w.busy = w.done = False
        if i:
            times[i - 1] = w.took_ns
    return dict(latency_figures(times), backend=slot.backend)


def fits(figures: dict, period_ns: int, every: int, chunk: int) -> tuple[bool, str]:
    """Its chunks must last until the next one arrives: k ticks plus the inference's p99.9."""
    late = int(np.ceil(figures["p999_us"] * 1000 / period_ns))
    if every + late > chunk:
        return False, (f"its chunk of {chunk} actions runs dry: a new one comes every {every} ticks and takes "
                       f"up to {late} more (p99.9 {figures['p999_us']:.0f} µs); it needs ≥ {every + late} actions")
    return True, ""


def warm(slot):
    """A generator: the new model's first chunk into its queue, computed on its worker from the
    latest inputs, so that the swap that follows finds actions waiting."""
    w = worker(slot)
    slot.binder.read_inputs()
    w.start()
    while not w.done:
        yield
    w.busy = w.done = False
    if slot.outputs_finite():
        slot.binder.push_chunks()
