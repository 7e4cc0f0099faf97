"""When the loop stops trusting its inputs or its model: the failsafe state.

Entered on a stale sensor channel, a non-finite output, a streak of overruns, a lost device,
no model, or on request. In failsafe the loop keeps ticking and reporting but writes every
actuator's declared safe value. It leaves failsafe by the board's rule: automatically after
``good_ticks`` consecutive good ticks, or only on request (``exit = "manual"``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SafetyConfig:
    """When failsafe is entered and left."""
    exit: str = "auto"              # "auto" | "manual"
    good_ticks: int = 25            # consecutive good ticks before an automatic exit
    overrun_streak: int = 5         # consecutive overruns that trip failsafe

    @staticmethod
    def from_board(d: dict) -> "SafetyConfig":
        cfg = SafetyConfig(**{k: v for k, v in d.items() if k in ("exit", "good_ticks", "overrun_streak")})
        if cfg.exit not in ("auto", "manual"):
            raise ValueError(f"[failsafe] exit must be 'auto' or 'manual', got {cfg.exit!r}")
        return cfg


class Safety:
    def __init__(self, cfg: SafetyConfig):
        self.cfg = cfg
        self.active = False
        self.reason = ""
        self.entries = 0
        self.good = 0
        self.overruns = 0
        self.release_requested = False

    def trip(self, reason: str) -> bool:
        """Enter (or stay in) failsafe; returns True when this is a new entry."""
        self.good = 0
        if self.active:
            self.reason = reason                    # the latest fault is the one worth showing
            return False
        self.active, self.reason = True, reason
        self.entries += 1
        return True

    def tick(self, fault: str | None, overrun: bool) -> None:
        """After each tick: ``fault`` is this tick's problem, if any."""
        self.overruns = self.overruns + 1 if overrun else 0
        if fault is None and self.overruns >= self.cfg.overrun_streak:
            fault = f"{self.overruns} overruns in a row"
        if fault is not None:
            self.trip(fault)
            return
        if not self.active:
            return
        self.good += 1
        if self.cfg.exit == "manual":
            if self.release_requested and self.good >= 1:
                self._leave()
        elif self.good >= self.cfg.good_ticks:
            self._leave()

    def request_release(self) -> None:
        self.release_requested = True

    def _leave(self) -> None:
        self.active, self.reason, self.good, self.release_requested = False, "", 0, False
