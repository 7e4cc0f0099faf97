"""Action chunks: a policy that emits the next K actions at once (ACT: 100) drives an actuator
through a queue that yields one action per tick.

``replace``: a new chunk replaces whatever was queued; its first action is this tick's.
``ensemble``: ACT's temporal ensembling — every chunk that covers a tick votes for it, weighted
``exp(-m·i)`` with i = 0 for the oldest of them, and the tick's action is the weighted mean.

Kept as running sums per future tick in a ring of K slots: when a chunk arrives, each tick it
covers already has ``count`` chunks, so its weight there is fixed at ``exp(-m·count)`` (later
chunks only come after it). A tick's action is ``Σ w·a / Σ w`` of its slot, which is then
cleared for the tick K later. Every array is allocated once: nothing allocates per tick.
"""
from __future__ import annotations

import numpy as np

MODES = ("replace", "ensemble")


class ActionQueue:
    def __init__(self, chunk: int, n: int, mode: str = "replace", m: float = 0.01):
        if mode not in MODES:
            raise ValueError(f"action queue mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.k, self.n, self.mode, self.m = chunk, n, mode, np.float64(m)
        self.wsum = np.zeros(chunk)                   # per ring slot (tick t at slot t % k)
        self.wa = np.zeros((chunk, n))                # Σ weight · action
        self.count = np.zeros(chunk)                  # chunks covering the slot's tick so far
        self._w = np.zeros(chunk)                     # scratch: this chunk's weights, in ring order
        self._wa = np.zeros((chunk, n))
        self.tick = 0                                 # the tick the next pop() is for
        self.pushed = 0
        self.empty = 0                                # pops that found no action (counted)

    def push(self, chunk: np.ndarray, skip: int = 0) -> None:
        """A new chunk ``[k, n]`` whose row ``skip`` is the action for the coming pop() — the rows
        before it were for ticks that passed while it was computed (asynchronous inference)."""
        if self.mode == "replace":
            self.wsum.fill(0.0)
            self.wa.fill(0.0)
            self.count.fill(0.0)
        k, p = self.k, self.tick % self.k
        m = k - min(max(skip, 0), k)                  # rows still ahead
        first = k - m
        # rows first.. go to slots p.. in ring order, wrapping past slot k-1 to slot 0
        head = min(m, k - p)
        for rows, slots in ((slice(first, first + head), slice(p, p + head)), (slice(first + head, k), slice(0, m - head))):
            w, wa = self._w[slots], self._wa[slots]
            np.multiply(self.count[slots], -self.m, out=w)
            np.exp(w, out=w)
            np.multiply(chunk[rows], w[:, None], out=wa)
            np.add(self.wsum[slots], w, out=self.wsum[slots])
            np.add(self.wa[slots], wa, out=self.wa[slots])
            np.add(self.count[slots], 1.0, out=self.count[slots])
        self.pushed += 1

    def ready(self) -> bool:
        """An action waits for the coming pop()."""
        return self.wsum[self.tick % self.k] > 0.0

    def pop(self, out: np.ndarray) -> bool:
        """This tick's action into ``out`` ([n]); False when no chunk covers it (the queue ran dry)."""
        p = self.tick % self.k
        self.tick += 1
        w = self.wsum[p]
        if w <= 0.0:
            self.empty += 1
            return False
        np.divide(self.wa[p], w, out=out, casting="unsafe")
        self.wsum[p] = 0.0
        self.wa[p].fill(0.0)
        self.count[p] = 0.0
        return True

    def skip(self) -> None:
        """A tick that does not take its action (failsafe): the queue keeps time with the ticks."""
        p = self.tick % self.k
        self.tick += 1
        self.wsum[p] = 0.0
        self.wa[p].fill(0.0)
        self.count[p] = 0.0

    def reset(self) -> None:
        self.wsum.fill(0.0)
        self.wa.fill(0.0)
        self.count.fill(0.0)
