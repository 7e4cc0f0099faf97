"""The loop: every tick, take the latest sensor samples, run the active plan, write the
actuators, record the tick — on time, without allocating, whatever else is going on.

Work that is not a tick (loading a model, measuring it, warming a shadow) runs as generator
jobs in the slack before the next deadline, a small step at a time, so it can never make a
tick late by more than one step. Swaps happen at tick boundaries.
"""
from __future__ import annotations

import gc
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hardware.channels import SENSOR
from hardware.errors import HardwareError

from .. import flags
from ..errors import NnosError
from ..telemetry import MODE, TelemetryWriter
from ..timing import DEFAULT_SLACK_MARGIN_NS, NS_PER_S, RateKeeper, now_ns, period_ns
from .safety import Safety, SafetyConfig
from .slots import Slot, admit, measure, prebuild


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
    budget_fraction: float = 0.5        # a model's p99.9 must fit in this share of the period
    probation_s: float = 2.0
    admission_runs: int = 1000
    slack_margin_ns: int = DEFAULT_SLACK_MARGIN_NS
    backend: str = field(default_factory=lambda: flags.BACKEND.get())
    reconnect_s: float = 1.0
    spin_us: int = field(default_factory=lambda: flags.SPIN_US.get())
    require_signed: bool = field(default_factory=lambda: flags.REQUIRE_SIGNED.get())


class Loop:
    def __init__(self, board, devices: dict, store, telemetry: TelemetryWriter, cfg: LoopConfig = LoopConfig(),
                 log=print):
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
        self.lost: set[str] = set()
        self.reconnecting: set[str] = set()
        self.stop = False
        self.tick_no = 0
        self.model_gen = 0
        self.stale = self._stale_table(board)
        self.tel.set("rate_mhz", int(board.rate_hz * 1000))
        self.tel.set("period_ns", self.period)
        self.tel.set("budget_ns", self.budget)
        self.tel.set("started_ns", now_ns())
        self._zero_in = np.zeros(1, np.float32)
        self._shown_reason = ""
        self.throttled = Throttle(log)
        self._reset_divergence()
        self.watchdog_fd = None

    def _stale_table(self, board) -> list:
        """(label, sample, stale limit in s, the channel's out-of-range fault threshold or 0)"""
        return [(f"{d.name}.{c.name}", self.devices[d.name].samples[c.name], d.stale_ms[c.name] / 1000.0,
                 c.fault_after if c.out_of_range == "failsafe" else 0)
                for d in board.devices for c in d.channels if c.kind == SENSOR and d.name in self.devices]

    def arm_watchdog(self, path: str) -> None:
        """Pet a hardware watchdog (/dev/watchdog) every tick: if the loop ever stops, the board
        resets. A clean shutdown disarms it with the magic 'V'."""
        import os
        try:
            self.watchdog_fd = os.open(path, os.O_WRONLY)
            self.log(f"loop: hardware watchdog {path} armed")
        except OSError as e:
            self.log(f"loop: hardware watchdog {path} not available: {e.strerror}")

    # --- models ------------------------------------------------------------------------------
    def load_initial(self) -> None:
        self.previous_id = self.store.state()["previous"]
        for mid, role in self.store.startup_order():
            try:
                plan = self._load_checked(mid)
                for _ in prebuild(plan, self.store.plan_path(mid), self.cfg.backend):   # not at this RT priority
                    time.sleep(0.01)
                self.active = Slot(mid, plan, self.board, self.devices, self.cfg.backend)
            except (NnosError, HardwareError) as e:
                self.log(f"loop: {role} model {mid[:12]} does not load: {e}")
                continue
            self.log(f"loop: running {role} model {mid[:12]} on {self.active.backend_report}")
            self._publish_models()
            return
        self.safety.trip("no model to run")
        self.log("loop: no loadable model; idling in failsafe (actuators at their safe values)")

    def _load_checked(self, mid: str):
        """A stored model, and the signing policy checked on its bytes (at activation, at the
        loop's start, after every restart: not only at upload)."""
        plan = self.store.load(mid)
        if self.cfg.require_signed:
            self.store.check_signed(mid)
        return plan

    def _publish_models(self) -> None:
        """Model ids into telemetry (memory only: no file is touched inside a tick)."""
        self.tel.text("active", self.active.id if self.active else "")
        self.tel.text("previous", self.previous_id or "")
        self.tel.text("shadow", self.shadow.id if self.shadow else "")
        self.tel.text("backend", self.active.backend_report if self.active else "")

    # --- one tick ----------------------------------------------------------------------------
    def tick(self, late_ns: int = 0) -> None:
        t0 = now_ns()
        if self.pending is not None:                  # hitless swap at the tick boundary
            self.fallback, self.active, self.pending = self.active, self.pending, None
            self.probation_end = self.tick_no + int(self.cfg.probation_s * NS_PER_S / self.period)
            self.model_gen += 1
            self.tel.add("swaps")
            self._publish_models()
        fault = self._read_devices()
        slot = self.active
        if slot is not None:
            slot.binder.read_inputs()
        t1 = now_ns()
        bad_output = False
        if slot is not None:
            slot.run()
            bad_output = not slot.outputs_finite()
        t2 = now_ns()
        overrun = (t2 - t0) > self.budget
        if self.probation_end >= 0 and (bad_output or overrun or fault):
            # the new model misbehaved (or the system tripped) in probation: back to the old one;
            # this tick writes safe values, the next runs the previous model
            self._roll_back("output is NaN or infinite" if bad_output else fault or
                            f"overrun: tick took {(t2 - t0) / 1000:.0f} µs > budget {self.budget / 1000:.0f} µs")
            slot, bad_output, overrun = None, False, False
        elif self.probation_end >= 0 and self.tick_no >= self.probation_end:
            self._commit()                     # survived probation: this tick already counts as active
        if bad_output:
            fault = fault or "model output is NaN or infinite"
        if self.active is None:
            fault = fault or "no model to run"
        self.safety.tick(fault, overrun)
        self._show_safety()
        if slot is not None and not self.safety.active:
            slot.binder.write_outputs()
        else:
            for dev in self.devices.values():
                dev.write_safe()
        self._flush()
        if self.shadow is not None:
            self._run_shadow()
        t3 = now_ns()
        if overrun:
            self.tel.add("overruns")
        mode = MODE["failsafe"] if self.safety.active else (MODE["probation"] if self.probation_end >= 0 else MODE["running"])
        self.tel.record(self.tick_no, t0, late_ns, t1 - t0, t2 - t1, t3 - t2, mode, self.model_gen & 0xFF,
                        slot.first_input if slot is not None else self._zero_in,
                        slot.first_output if slot is not None else self._zero_in)
        self.tel.set("mode", mode)
        self.tel.set("heartbeat_ns", t3)
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

    def _read_devices(self):
        fault = None
        for name, dev in self.devices.items():
            if name in self.lost:
                fault = fault or f"device {name} lost"
                continue
            try:
                dev.poll(0.0)
            except HardwareError as e:
                self.lost.add(name)
                fault = f"device {name} lost: {e}"
                self._reconnect_later(name)
        if fault is None:
            now = now_ns() / NS_PER_S
            for label, sample, limit, fault_after in self.stale:
                if now - sample.t_host > limit:
                    return f"sensor {label} stale (no reading for {min(now - sample.t_host, 999):.3f} s > {limit:.3f} s)"
                if fault_after and sample.bad_run >= fault_after:
                    return (f"sensor {label} out of range ({sample.bad_value:.6g}; "
                            f"{sample.bad_run} reading{'s' if sample.bad_run > 1 else ''} in a row)")
        return fault

    def _flush(self) -> None:
        for name, dev in self.devices.items():
            if name in self.lost:
                continue
            try:
                dev.flush(self._ref_timestamp(dev))
            except HardwareError as e:
                self.lost.add(name)
                self.log(f"loop: device {name} lost while writing: {e}")
                self._reconnect_later(name)

    @staticmethod
    def _ref_timestamp(dev) -> int:
        for s in dev.samples.values():
            return s.t_device_us
        return 0

    def _reconnect_later(self, name: str) -> None:
        dev = self.devices[name]
        if name in self.reconnecting or not hasattr(dev, "port"):
            return
        self.reconnecting.add(name)

        def work():                                  # a helper thread: mostly waits in select()
            import time
            while not self.stop:
                try:
                    dev.close()
                except HardwareError:
                    pass
                try:
                    dev.open()
                    self.lost.discard(name)
                    self.log(f"loop: device {name} is back")
                    break
                except HardwareError:
                    time.sleep(self.cfg.reconnect_s)
            self.reconnecting.discard(name)
        threading.Thread(target=work, name=f"reconnect-{name}", daemon=True).start()

    # --- probation, rollback, shadow ----------------------------------------------------------
    def _roll_back(self, reason: str) -> None:
        bad, self.active, self.fallback = self.active, self.fallback, None
        self.probation_end = -1
        self.model_gen += 1
        self.tel.add("rollbacks")
        self.log(f"loop: model {bad.id[:12]} rolled back in probation: {reason}")
        self.probation_fault = reason
        self._publish_models()
        self._answer("activate", {"ok": False, "outcome": "rolled back", "model": bad.id, "reason": reason})

    def _commit(self) -> None:
        """Probation passed. The store is written (fsync) by a job in the slack, not in this
        tick; the previous model stays warm until it is, so a failed write can go back to it."""
        self.probation_end = -1
        self.committing = self.active.id
        self.jobs.append(("commit", "activate", self._commit_job(self.active.id)))

    def _commit_job(self, mid: str):
        yield
        try:
            st = self.store.activate(mid, "passed probation")
        except (NnosError, OSError) as e:
            self._commit_failed(mid, f"{type(e).__name__}: {e}" if isinstance(e, OSError) else str(e))
            return
        old, self.fallback, self.committing = self.fallback, None, None
        self.previous_id = old.id if old is not None else self.previous_id
        self._publish_models()
        self.log(f"loop: model {mid[:12]} passed probation and is active")
        self._answer("activate", {"ok": True, "outcome": "active", "model": mid, "previous": st["previous"]})

    def _commit_failed(self, mid: str, why: str) -> None:
        """The store could not record the new model (disk full, file gone): the loop goes back
        to the model the store names as active, so that the store and the loop agree."""
        reason = f"passed probation but the store could not commit it ({why}); back to the stored active model"
        self.active, self.fallback, self.committing = self.fallback, None, None
        self.model_gen += 1
        self.tel.add("rollbacks")
        self.log(f"loop: model {mid[:12]} {reason}")
        self._publish_models()
        self._answer("activate", {"ok": False, "outcome": "rolled back", "model": mid, "reason": reason})

    def in_use(self) -> dict:
        """Models the loop holds, and why: none of them may be deleted from the store."""
        held = {}
        for role, slot in (("active", self.active), ("previous, kept warm until the commit", self.fallback),
                           ("waiting for the next tick boundary", self.pending), ("shadow", self.shadow)):
            if slot is not None:
                held.setdefault(slot.id, role)
        if self.active is not None and (self.probation_end >= 0 or self.committing):
            held[self.active.id] = "under probation"
        return held

    def _reset_divergence(self) -> None:
        """Running |shadow − active| sums per output value (the first MAX_IO), and their count."""
        k = self.tel.shadow_mean.size
        self._div, self._divmax, self._diff = (np.zeros(k, np.float32) for _ in range(3))
        self._shadow_n = 0
        self.tel.shadow_mean[:] = 0
        self.tel.shadow_max[:] = 0

    def _run_shadow(self) -> None:
        sh, act = self.shadow, self.active
        sh.binder.read_inputs()
        sh.run()
        self.tel.add("shadow_ticks")
        if act is None:
            return
        self._shadow_n += 1
        n = self._shadow_n
        a, s = act.first_output, sh.first_output
        k = min(a.size, s.size, self._div.size)
        np.subtract(s[:k], a[:k], out=self._diff[:k])
        np.absolute(self._diff[:k], out=self._diff[:k])
        np.add(self._div[:k], self._diff[:k], out=self._div[:k])
        np.maximum(self._divmax[:k], self._diff[:k], out=self._divmax[:k])
        np.multiply(self._div[:k], 1.0 / n, out=self.tel.shadow_mean[:k])
        np.copyto(self.tel.shadow_max[:k], self._divmax[:k])

    # --- requests -----------------------------------------------------------------------------
    def handle(self, msg: dict, addr) -> dict | None:
        cmd, rid = msg.get("cmd"), msg.get("id")
        if cmd == "status":
            now = now_ns() / NS_PER_S
            devices = {}
            for name, dev in self.devices.items():
                st = dev.stats() if dev.is_open else {}
                devices[name] = {
                    "open": dev.is_open, "lost": name in self.lost,
                    "faults": {k: v for k, v in st.items() if isinstance(v, int)},
                    "channels": {c: {"age_s": round(now - s.t_host, 4) if s.t_host else None, "readings": s.count,
                                     "out_of_range": s.out_of_range} for c, s in dev.samples.items()}}
            return {"ok": True, "failsafe": self.safety.active, "reason": self.safety.reason, "in_use": self.in_use(),
                    "active": self.active.id if self.active else None, "lost": sorted(self.lost),
                    "shadow": self.shadow.id if self.shadow else None, "tick": self.tick_no, "devices": devices}
        if cmd == "activate":
            if "activate" in self.waiting or self.pending is not None or self.probation_end >= 0 or self.committing:
                return {"ok": False, "error": "another activation is in progress"}
            self.waiting["activate"] = (addr, rid)
            self.jobs.append(("activate", "activate", self._activate_job(str(msg.get("model")), msg)))
            return None
        if cmd == "shadow":
            if msg.get("model") is None:
                self.shadow = None
                self._publish_models()
                return {"ok": True, "shadow": None}
            self.waiting["shadow"] = (addr, rid)
            self.jobs.append(("shadow", "shadow", self._shadow_job(str(msg["model"]))))
            return None
        if cmd == "device":                            # from the hotplug watcher
            name, dev = msg.get("device"), self.devices.get(msg.get("device"))
            if dev is None:
                return {"ok": False, "error": f"no device {name!r} on this board"}
            if msg.get("action") == "remove":
                self.lost.add(name)
                for s in dev.samples.values():
                    s.t_host = 0.0
                return {"ok": True}
            if hasattr(dev, "port"):
                dev.port = msg.get("path") or dev.port
            if name in self.lost or not dev.is_open:
                self.lost.add(name)
                self._reconnect_later(name)
            return {"ok": True}
        if cmd == "reload_board":
            self.waiting["reload_board"] = (addr, rid)
            self.jobs.append(("reload_board", "reload_board", self._reload_board_job()))
            return None
        if cmd == "release":
            self.safety.request_release()
            return {"ok": True, "failsafe": self.safety.active}
        if cmd == "stop":
            self.stop = True
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _answer(self, job: str, reply: dict) -> None:
        addr, rid = self.waiting.pop(job, (None, None))
        if self.on_answer and addr is not None:
            self.on_answer(addr, dict(reply, id=rid))

    on_answer = None

    def _activate_job(self, mid: str, msg: dict):
        try:
            plan = self._load_checked(mid)
            yield
            yield from prebuild(plan, self.store.plan_path(mid), self.cfg.backend)   # a compile runs beside the ticks
            slot = Slot(mid, plan, self.board, self.devices, self.cfg.backend)
            yield
            figures = yield from measure(slot, int(msg.get("runs", self.cfg.admission_runs)))
        except (NnosError, HardwareError) as e:
            self._answer("activate", {"ok": False, "outcome": "refused", "model": mid, "reason": str(e)})
            return
        ok, why = admit(figures, self.budget)
        if not ok and figures["p99_us"] * 4 < self.budget / 1000:
            # p99 far inside the budget but p99.9 over it: one or two stalled runs (this machine,
            # not the model). Measure again; a model that is really too slow fails twice.
            figures = yield from measure(slot, int(msg.get("runs", self.cfg.admission_runs)), warmup=0)
            ok, why = admit(figures, self.budget)
        if not ok:
            self._answer("activate", {"ok": False, "outcome": "refused", "model": mid, "reason": why,
                                      "latency": figures})
            return
        self.log(f"loop: model {mid[:12]} {why}")
        if "probation_s" in msg:
            self.cfg.probation_s = float(msg["probation_s"])
        self.pending = slot

    def _reload_board_job(self):
        """The board file changed (bindings, clamps, rate, failsafe rule): rebind the running
        model in the slack and switch at a tick boundary. Devices and channels must not change."""
        from hardware.board import load_board
        try:
            board = load_board(self.board.path)
            def devices(b):     # what each device is and how it is found (path, USB identity, simulator)
                return [(d.name, d.driver, d.path, sorted(d.usb.items()), d.simulator, d.recording,
                         [(c.name, c.kind, c.shape) for c in d.channels]) for d in b.devices]
            if devices(board) != devices(self.board):
                raise NnosError("devices or channels differ from the running board: that needs a restart")
            safety = SafetyConfig.from_board(board.failsafe)
            period = period_ns(board.rate_hz)
            yield
            slot = Slot(self.active.id, self.active.plan, board, self.devices, self.cfg.backend) if self.active else None
        except (NnosError, HardwareError, ValueError) as e:
            self._answer("reload_board", {"ok": False, "reason": str(e)})
            return
        self.board, self.safety.cfg = board, safety
        self.stale = self._stale_table(board)
        if period != self.period:
            self.period, self.budget = period, int(period * self.cfg.budget_fraction)
            self.new_rate = board.rate_hz
            self.tel.set("rate_mhz", int(board.rate_hz * 1000))
            self.tel.set("period_ns", period)
            self.tel.set("budget_ns", self.budget)
        if slot is not None:
            self.active = slot                    # same plan, new bindings: takes effect next tick
        self.log(f"loop: board {board.name} reloaded ({board.rate_hz:g} Hz)")
        self._answer("reload_board", {"ok": True, "rate_hz": board.rate_hz})

    def _shadow_job(self, mid: str):
        try:
            slot = Slot(mid, self.store.load(mid), self.board, self.devices, self.cfg.backend)
            yield
            yield from measure(slot, 100, warmup=10)
        except (NnosError, HardwareError) as e:
            self._answer("shadow", {"ok": False, "reason": str(e)})
            return
        self._reset_divergence()
        self.shadow = slot
        self._publish_models()
        self._answer("shadow", {"ok": True, "shadow": mid})

    def background(self, keeper: RateKeeper) -> None:
        """Advance jobs while there is slack before the next deadline."""
        while self.jobs and keeper.remaining_ns() > self.cfg.slack_margin_ns:
            name, answers, job = self.jobs[0]
            try:
                next(job)
            except StopIteration:
                self.jobs.popleft()
            except Exception as e:              # a job never takes the loop down with it
                self.jobs.popleft()
                self.log(f"loop: {name} failed: {type(e).__name__}: {e}")
                self._answer(answers, {"ok": False, "outcome": "failed", "reason": f"{type(e).__name__}: {e}"})

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
            if self.tick_no % self._gc_every == 0 and keeper.remaining_ns() > self.cfg.slack_margin_ns:
                gc.collect(0)                    # young objects only: tens of µs, once a second
        gc.enable()

    def shutdown(self) -> None:
        """Actuators to their safe values first, then close the devices."""
        self.stop = True
        for name, dev in self.devices.items():
            if name in self.lost:
                continue
            try:
                dev.write_safe()
                dev.flush(0)
            except HardwareError:
                pass
        for dev in self.devices.values():
            try:
                dev.close()
            except HardwareError:
                pass
        if self.watchdog_fd is not None:
            import os
            _write(self.watchdog_fd, b"V")     # magic close: a clean stop must not reset the board
            os.close(self.watchdog_fd)
            self.watchdog_fd = None
