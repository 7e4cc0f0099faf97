"""The action queue against a plain numpy reference of ACT's temporal ensembling (the rule as
ACT's evaluation loop writes it: every chunk that covers a tick, weights exp(-m·i), i = 0 for
the oldest, normalised), and the replace rule."""
from __future__ import annotations

import numpy as np
import pytest

from nnos_hardware.action_queue import ActionQueue
from tests.support.action_chunks import act_reference


@pytest.mark.parametrize("every", [1, 3, 7])
@pytest.mark.parametrize("m", [0.0, 0.01, 0.5])
def test_ensembling_matches_acts_rule(every, m):
    k, n, ticks = 8, 3, 60
    rng = np.random.default_rng(every * 100 + int(m * 10))
    chunks = {t: rng.normal(size=(k, n)) for t in range(0, ticks, every)}
    q, got = ActionQueue(k, n, "ensemble", m), np.full((ticks, n), np.nan)
    out = np.zeros(n, np.float32)
    for t in range(ticks):
        if t in chunks:
            q.push(chunks[t])
        if q.pop(out):
            got[t] = out
    want = act_reference(chunks, ticks, k, n, m)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert q.empty == 0 if every <= k else q.empty > 0


def test_replace_runs_one_chunk_then_runs_dry():
    q, out = ActionQueue(4, 2, "replace"), np.zeros(2, np.float32)
    q.push(np.arange(8.0).reshape(4, 2))
    seen = []
    for _ in range(2):
        assert q.pop(out)
        seen.append(out.tolist())
    q.push(np.full((4, 2), 9.0))                      # replaces what was left
    while q.pop(out):
        seen.append(out.tolist())
    assert seen == [[0, 1], [2, 3], [9, 9], [9, 9], [9, 9], [9, 9]]
    assert q.empty == 1, "the pop that found nothing is counted"


def test_a_chunk_that_never_covers_a_tick_leaves_it_empty():
    q, out = ActionQueue(3, 1, "ensemble", 0.01), np.zeros(1, np.float32)
    q.push(np.ones((3, 1)))
    assert [q.pop(out) for _ in range(4)] == [True, True, True, False]


def test_pushing_and_popping_allocate_nothing():
    import tracemalloc
    q, out, chunk = ActionQueue(50, 6, "ensemble", 0.01), np.zeros(6, np.float32), np.ones((50, 6))
    for _ in range(100):
        q.push(chunk)
        q.pop(out)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(1000):
        q.push(chunk)
        q.pop(out)
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename") if s.size_diff > 0)
    tracemalloc.stop()
    assert grown < 4096, f"{grown} bytes kept after 1000 ticks"


@pytest.mark.parametrize("skip", [0, 1, 3, 7])
def test_a_late_chunk_skips_the_actions_whose_ticks_passed(skip):
    """Asynchronous inference: a chunk computed from inputs read ``skip`` ticks ago starts at its
    row ``skip`` — each action lands on the tick it was meant for (the reference: ACT's rule with
    the chunk's remaining rows from the tick it arrived)."""
    k, n, ticks, every = 8, 2, 40, 5
    rng = np.random.default_rng(skip)
    chunks = {t: rng.normal(size=(k, n)) for t in range(0, ticks, every)}
    q, out, got = ActionQueue(k, n, "ensemble", 0.1), np.zeros(n, np.float32), np.full((ticks, n), np.nan)
    for t in range(ticks):
        if t - skip in chunks:
            q.push(chunks[t - skip], skip)
        if q.pop(out):
            got[t] = out
    want = act_reference({t + skip: c[skip:] for t, c in chunks.items()}, ticks, k, n, 0.1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
