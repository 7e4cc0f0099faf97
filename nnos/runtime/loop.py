"""The loop: every tick, take the latest sensor samples, run the active plan, write the
actuators, record the tick — on time, without allocating, whatever else is going on.

    tick():  swap at the boundary → io.read() → bind inputs → run → check → safety →
             write outputs (or safe values) → io.flush() → shadow → record

Work that is not a tick (loading a model, measuring it, warming a shadow: models.py) runs as
generator jobs in the slack before the next deadline, a small step at a time, so it can never
make a tick late by more than one step. Devices are read, written and reconnected by devio.py;
actuator commands get their rate limit and failsafe rule from actuators.py; arming, calibration
and the stop's wind-down are arming.py; requests on the control socket are answered by requests.py.
"""
from __future__ import annotations

import gc
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .. import flags
from ..errors import BackendError
from ..telemetry import MODE, TelemetryWriter
from ..timing import DEFAULT_SLACK_MARGIN_NS, NS_PER_S, RateKeeper, now_ns, period_ns
from . import inference, requests
from .actuators import Actuators
from .devio import DeviceIO
from .arming import Arming
from .models import ModelJobs
from .safety import Safety, SafetyConfig
from .slots import Slot


def _write(fd: int, data: bytes) -> None:
    import os
    try:
        os.write(fd, data)
    except OSError:
        pass


class Throttle:
    """At most one log line per ``every_s`` of each kind; the lines held back are counted and
    the count is said with the next line of that kind that is shown."""

    def __init__(self, log, every_s: float = 1.0):
        self.log, self.every_s = log, every_s
        self.seen: dict[str, tuple[float, int]] = {}

    def __call__(self, kind: str, line: str) -> None:
        now = time.monotonic()
        last, held = self.seen.get(kind, (-self.every_s, 0))
        if now - last < self.every_s:
            self.seen[kind] = (last, held + 1)
            return
        self.log(line + (f" (+{held} similar lines in the last {now - last:.1f} s)" if held else ""))
        self.seen[kind] = (now, 0)


@dataclass
class LoopConfig:
    """The loop's admission, probation, backend and timing settings."""
    budget_fraction: float = 0.5        # a model's p99.9 must fit in this share of the period
    probation_s: float = 2.0
    admission_runs: int = 1000
    slack_margin_ns: int = DEFAULT_SLACK_MARGIN_NS
    backend: str = field(default_factory=lambda: flags.BACKEND.get())
    reconnect_s: float = 1.0
    spin_us: int = field(default_factory=lambda: flags.SPIN_US.get())
    require_signed: bool = field(default_factory=lambda: flags.REQUIRE_SIGNED.get())


class Loop(ModelJobs, Arming):
    def __init__(self, board, devices: dict, store, telemetry: TelemetryWriter, cfg: LoopConfig = LoopConfig(),
                 log=print, heartbeat=None, channels=None):
        self.board, self.devices, self.store, self.tel, self.cfg, self.log = board, devices, store, telemetry, cfg, log
        self.period = period_ns(board.rate_hz)
        self.budget = int(self.period * cfg.budget_fraction)
        self.safety = Safety(SafetyConfig.from_board(board.failsafe))
        self.active: Slot | None = None
        self.fallback: Slot | None = None            # the previous model, kept warm during probation
        self.shadow: Slot | None = None
        self.pending: Slot | None = None             # swapped in at the next tick boundary
        self.probation_end = -1
        self.probation_fault = ""
        self.jobs: deque = deque()                   # (name, the request it answers, generator)
        self.waiting: dict[str, tuple] = {}          # request kind -> (reply address, request id)
        self.committing: str | None = None           # passed probation, the store not yet written
        self.previous_id: str | None = None
        self.stop = False
        self.io = DeviceIO(board, devices, log, cfg.reconnect_s, stopped=lambda: self.stop)
        self.act = Actuators(board, devices, board.rate_hz)
        self._wound_down = False
        self.arm_pending = {d.name for d in board.devices if getattr(d, "arm_on_start", False)}
        self.tick_no = 0
        self.model_gen = 0
        self.tel.set("rate_mhz", int(board.rate_hz * 1000))
        self.tel.set("period_ns", self.period)
        self.tel.set("budget_ns", self.budget)
        self.tel.set("started_ns", now_ns())
        self._zero_in = np.zeros(1, np.float32)
        self._shown_reason = ""
        self.throttled = Throttle(log)
        self._reset_divergence()
        self.watchdog_fd = None
        self.heartbeat = heartbeat                   # nnos.heartbeat.Heartbeat: the supervisor's watchdog reads it
        self.channels = channels                     # telemetry.ChannelWriter: every channel, every tick (recordings)

    def arm_watchdog(self, path: str) -> None:
        """Pet a hardware watchdog (/dev/watchdog) every tick: if the loop ever stops, the board
        resets. A clean shutdown disarms it with the magic 'V'."""
        import os
        try:
            self.watchdog_fd = os.open(path, os.O_WRONLY)
            self.log(f"loop: hardware watchdog {path} armed")
        except OSError as e:
            self.log(f"loop: hardware watchdog {path} not available: {e.strerror}")

    # --- one tick ----------------------------------------------------------------------------
    def tick(self, late_ns: int = 0) -> None:
        """read → bind → run → judge → write → record; no allocation, no file, no syscall but
        the devices' own reads and writes."""
        t0 = now_ns()
        self._swap_if_pending()
        fault = self.io.read()
        slot = self.active
        if slot is not None and self.board.infer_every == 1:
            slot.binder.read_inputs()
        t1 = now_ns()
        bad_output = False
        if slot is not None and self.board.infer_every > 1:
            bad_output = inference.step(self, slot, self.board.infer_every)
        elif slot is not None:
            try:
                slot.run()
                bad_output = not slot.outputs_finite()
            except BackendError as e:          # the accelerator is gone: this tick fails safe
                why = self.accelerator_lost(slot, e)
                fault = fault or why
        t2 = now_ns()
        slot, fault, overrun = self._judge(slot, fault, bad_output, t2 - t0)
        if slot is not None and self.board.infer_every > 1 and not slot.binder.queues_ready():
            fault = fault or "action queue ran dry (the last inference is late)"
        self.safety.tick(fault, overrun)
        self._show_safety()
        if slot is not None and not self.safety.active:
            slot.binder.write_outputs()
        else:
            if slot is not None:
                slot.binder.skip_actions()
            self.act.failsafe()
        self.act.limit()
        self.io.flush()
        if self.shadow is not None:
            self._run_shadow()
        self._record(slot, late_ns, t0, t1, t2, overrun)

    def accelerator_lost(self, slot, e: Exception) -> str:
        """``slot``'s device failed mid-run (lost, reset, out of memory): its spare — the same
        model on the CPU, bound when it was admitted — runs from the next tick. Said once;
        returns this tick's fault."""
        spare, why = slot.spare, str(e)
        if spare is None:
            return why
        for name in ("active", "fallback", "pending", "shadow"):
            if getattr(self, name) is slot:
                setattr(self, name, spare)
        slot.spare = None
        slot.close()                           # its inference worker, if any, ends; the spare lives on
        self.tel.add("accelerator_lost")
        self.log(f"loop: {why}; model {slot.id[:12]} runs on the {spare.backend} backend from the next tick")
        self._publish_models()
        return why

    def _swap_if_pending(self) -> None:
        """A hitless swap at the tick boundary: the admitted model runs from this tick, the
        previous one stays warm through probation."""
        if self.pending is None:
            return
        self.fallback, self.active, self.pending = self.active, self.pending, None
        self.probation_end = self.tick_no + int(self.cfg.probation_s * NS_PER_S / self.period)
        self.model_gen += 1
        self.tel.add("swaps")
        self._publish_models()

    def _judge(self, slot, fault, bad_output: bool, took_ns: int):
        """This tick's verdict: (the slot whose outputs may be written, the fault, overrun). A
        model in probation that misbehaves (or a system that trips) is rolled back at once."""
        overrun = took_ns > self.budget
        if self.probation_end >= 0 and (bad_output or overrun or fault):
            # this tick writes safe values, the next runs the previous model
            self._roll_back("output is NaN or infinite" if bad_output else fault or
                            f"overrun: tick took {took_ns / 1000:.0f} µs > budget {self.budget / 1000:.0f} µs")
            slot, bad_output, overrun = None, False, False
        elif self.probation_end >= 0 and self.tick_no >= self.probation_end:
            self._commit()                     # survived probation: this tick already counts as active
        if bad_output:
            fault = fault or "model output is NaN or infinite"
        if self.active is None:
            fault = fault or "no model to run"
        return slot, fault, overrun

    def _record(self, slot, late_ns: int, t0: int, t1: int, t2: int, overrun: bool) -> None:
        """The tick into telemetry (the ring record, the mode, the heartbeat) and the watchdog."""
        t3 = now_ns()
        if overrun:
            self.tel.add("overruns")
        mode = MODE["failsafe"] if self.safety.active else (MODE["probation"] if self.probation_end >= 0 else MODE["running"])
        self.tel.record(self.tick_no, t0, late_ns, t1 - t0, t2 - t1, t3 - t2, mode, self.model_gen & 0xFF,
                        slot.first_input if slot is not None else self._zero_in,
                        slot.first_output if slot is not None else self._zero_in)
        self.tel.set("mode", mode)
        if self.channels is not None:
            self.channels.record(self.tick_no, t0, mode)
        self.tel.set("heartbeat_ns", t3)
        if self.heartbeat is not None:
            self.heartbeat.beat(t3)
        if self.watchdog_fd is not None:
            _write(self.watchdog_fd, b"\0")
        self.tel.add("ticks")
        self.tick_no += 1

    def _show_safety(self) -> None:
        """Failsafe entries, reasons and exits into telemetry and the log (a reason that changes
        every tick — a flood of stale readings — is logged at most once a second per kind of
        reason, with a count; another kind of reason is logged at once)."""
        s = self.safety
        if s.active and s.reason != self._shown_reason:
            if s.entries > self.tel.c[self.tel.idx["failsafe_entries"]]:
                self.tel.add("failsafe_entries")
            self.tel.text("failsafe_reason", s.reason)
            self.throttled(s.reason.split(" (")[0].split(":")[0], f"loop: FAILSAFE: {s.reason}")
        elif not s.active and self._shown_reason:            # failsafe ended
            self.tel.text("last_failsafe_reason", self._shown_reason)
            self.tel.text("failsafe_reason", "")
        self._shown_reason = s.reason if s.active else ""

    # --- requests and rate -----------------------------------------------------------------------
    def handle(self, msg: dict, addr) -> dict | None:
        return requests.handle(self, msg, addr)

    on_answer = None          # the control server's reply(addr, msg): jobs answer their requests through it

    def set_rate(self, rate_hz: float) -> None:
        """A reloaded board changed the rate: the next tick keeps the new period."""
        self.act = Actuators(self.board, self.devices, rate_hz)
        self.period = period_ns(rate_hz)
        self.budget = int(self.period * self.cfg.budget_fraction)
        self.new_rate = rate_hz
        self.tel.set("rate_mhz", int(rate_hz * 1000))
        self.tel.set("period_ns", self.period)
        self.tel.set("budget_ns", self.budget)

    # --- running -------------------------------------------------------------------------------
    def run(self, server=None, duration_s: float | None = None) -> None:
        # No cyclic GC pass may land inside a tick: collect now, then only in the slack.
        gc.collect()
        gc.disable()
        self._gc_every = max(1, int(NS_PER_S // self.period))
        keeper = RateKeeper(self.board.rate_hz, spin_ns=self.cfg.spin_us * 1000)
        end = None if duration_s is None else now_ns() + int(duration_s * NS_PER_S)
        if server is not None:
            self.on_answer = server.reply
        self.new_rate = None
        while not self.stop and (end is None or now_ns() < end):
            if self.new_rate:                      # a reloaded board changed the rate
                keeper = RateKeeper(self.new_rate, spin_ns=self.cfg.spin_us * 1000)
                self._gc_every = max(1, int(NS_PER_S // self.period))
                self.new_rate = None
            late = keeper.wait()
            self.tel.set("misses", keeper.misses)
            if late > self.period // 10:
                self.tel.add("late_ticks")
            self.tick(late)
            if server is not None:
                req = server.receive()
                if req is not None:
                    reply = self.handle(*req)
                    if reply is not None:
                        server.reply(req[1], dict(reply, id=req[0].get("id")))
            self.background(keeper)
            if self.arm_pending:
                self._arm_on_start()
            if self.tick_no % self._gc_every == 0 and keeper.remaining_ns() > self.cfg.slack_margin_ns:
                gc.collect(0)                    # young objects only: tens of µs, once a second
        gc.enable()

    def shutdown(self) -> None:
        """Actuators by their failsafe rule first (wind_down), then close the devices."""
        self.stop = True
        if not self._wound_down:
            self.wind_down()
        self.io.close()
        if self.watchdog_fd is not None:
            import os
            _write(self.watchdog_fd, b"V")     # magic close: a clean stop must not reset the board
            os.close(self.watchdog_fd)
            self.watchdog_fd = None
