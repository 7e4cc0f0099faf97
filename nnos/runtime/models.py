"""The loop's model work, all of it generator jobs advanced in the slack between ticks (never
inside one): loading at start, activation (load → prebuild → bind → measure → admit → swap at a
tick boundary → probation → commit), rollback, shadow runs and board reloads.

``ModelJobs`` is mixed into ``Loop``; what it touches of the loop: ``store``, ``board``,
``devices``, ``cfg``, ``tel``, ``budget`` and the slots (``active``, ``fallback``, ``pending``,
``shadow``)."""
from __future__ import annotations

import time

import numpy as np

from nnos_hardware.errors import HardwareError

from ..errors import BackendError, NnosError
from ..timing import period_ns
from . import inference
from .actuators import Actuators
from .safety import SafetyConfig
from .slots import Slot, admit, measure, prebuild


class ModelJobs:
    # --- at start ----------------------------------------------------------------------------------
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

    # --- activation ----------------------------------------------------------------------------------
    def _activate_job(self, mid: str, msg: dict):
        try:
            plan = self._load_checked(mid)
            yield
            yield from prebuild(plan, self.store.plan_path(mid), self.cfg.backend)   # a compile runs beside the ticks
            slot = Slot(mid, plan, self.board, self.devices, self.cfg.backend)
            yield
            figures = yield from self._measure(slot, msg)
        except (NnosError, HardwareError) as e:
            self._answer("activate", {"ok": False, "outcome": "refused", "model": mid, "reason": str(e)})
            return
        budget = self.budget * self.board.infer_every          # asynchronous: k ticks to infer in
        ok, why = self._admit(slot, figures, budget)
        if not ok and figures["p99_us"] * 4 < budget / 1000:
            # p99 far inside the budget but p99.9 over it: one or two stalled runs (this machine,
            # not the model). Measure again; a model that is really too slow fails twice.
            figures = yield from self._measure(slot, msg, warmup=0)
            ok, why = self._admit(slot, figures, budget)
        if not ok:
            slot.close()
            self._answer("activate", {"ok": False, "outcome": "refused", "model": mid, "reason": why,
                                      "latency": figures})
            return
        self.log(f"loop: model {mid[:12]} {why}")
        if "probation_s" in msg:
            self.cfg.probation_s = float(msg["probation_s"])
        if self.board.infer_every > 1:
            yield from inference.warm(slot)                # its first chunk waits in its queue
        self.pending = slot

    def _admit(self, slot, figures: dict, budget: int) -> tuple[bool, str]:
        """Within the budget, and (asynchronous) chunks long enough to last until the next one."""
        ok, why = admit(figures, budget)
        if ok and self.board.infer_every > 1:
            fits, short = inference.fits(figures, self.period, self.board.infer_every, slot.binder.shortest_chunk)
            return fits, why if fits else short
        return ok, why

    def _measure(self, slot, msg: dict, warmup: int = 50):
        runs = int(msg.get("runs", self.cfg.admission_runs))
        if self.board.infer_every > 1:                     # on its worker, a run may take several ticks
            return (yield from inference.measure(slot, min(runs, 50)))
        return (yield from measure(slot, runs, warmup=warmup))

    def _roll_back(self, reason: str) -> None:
        bad, self.active, self.fallback = self.active, self.fallback, None
        bad.close()
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
        if old is not None:
            old.close()
        self._publish_models()
        self.log(f"loop: model {mid[:12]} passed probation and is active")
        self._answer("activate", {"ok": True, "outcome": "active", "model": mid, "previous": st["previous"]})

    def _commit_failed(self, mid: str, why: str) -> None:
        """The store could not record the new model (disk full, file gone): the loop goes back
        to the model the store names as active, so that the store and the loop agree."""
        reason = f"passed probation but the store could not commit it ({why}); back to the stored active model"
        self.active.close()
        self.active, self.fallback, self.committing = self.fallback, None, None
        self.model_gen += 1
        self.tel.add("rollbacks")
        self.log(f"loop: model {mid[:12]} {reason}")
        self._publish_models()
        self._answer("activate", {"ok": False, "outcome": "rolled back", "model": mid, "reason": reason})

    # --- shadow ----------------------------------------------------------------------------------
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

    def _reset_divergence(self) -> None:
        """Running |shadow − active| sums per output value (the first MAX_IO), and their count."""
        k = self.tel.shadow_mean.size
        self._div, self._divmax, self._diff = (np.zeros(k, np.float32) for _ in range(3))
        self._shadow_n = 0
        self.tel.shadow_mean[:] = 0
        self.tel.shadow_max[:] = 0

    def _run_shadow(self) -> None:
        """In the tick, after the actuators are written: the shadow model on the same inputs."""
        sh, act = self.shadow, self.active
        sh.binder.read_inputs()
        try:
            sh.run()
        except BackendError as e:              # its device is gone: the shadow goes on on its spare
            self.accelerator_lost(sh, e)
            return
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

    # --- a changed board -------------------------------------------------------------------------
    def _reload_board_job(self):
        """The board file changed (bindings, clamps, rate, failsafe rule): rebind the running
        model in the slack and switch at a tick boundary. Devices and channels must not change."""
        from nnos_hardware.board import load_board
        try:
            board = load_board(self.board.path)
            if _device_identity(board) != _device_identity(self.board):
                raise NnosError("devices or channels differ from the running board: that needs a restart")
            safety = SafetyConfig.from_board(board.failsafe)
            period = period_ns(board.rate_hz)
            yield
            slot = Slot(self.active.id, self.active.plan, board, self.devices, self.cfg.backend) if self.active else None
        except (NnosError, HardwareError, ValueError) as e:
            self._answer("reload_board", {"ok": False, "reason": str(e)})
            return
        self.board, self.safety.cfg = board, safety
        self.io.retable(board)
        if period != self.period:
            self.set_rate(board.rate_hz)
        else:                                     # max_rate or a failsafe rule may have changed
            self.act = Actuators(board, self.devices, board.rate_hz)
        if slot is not None:
            self.active.close()
            self.active = slot                    # same plan, new bindings: takes effect next tick
        self.log(f"loop: board {board.name} reloaded ({board.rate_hz:g} Hz)")
        self._answer("reload_board", {"ok": True, "rate_hz": board.rate_hz})

    # --- running the jobs ----------------------------------------------------------------------
    def background(self, keeper) -> None:
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

    def _answer(self, job: str, reply: dict) -> None:
        addr, rid = self.waiting.pop(job, (None, None))
        if self.on_answer and addr is not None:
            self.on_answer(addr, dict(reply, id=rid))


def _device_identity(board) -> list:
    """What each device is and how it is found (path, USB identity, simulator) and its channels."""
    return [(d.name, d.driver, d.path, sorted(d.usb.items()), d.simulator, d.recording,
             [(c.name, c.kind, c.shape) for c in d.channels]) for d in board.devices]
