"""The memory planner (a pure function) and the memory plans the compiler makes."""
from __future__ import annotations

import numpy as np
import pytest

import nnos
from nnos.schedule.memory import Buffer, lower_bound, padded, place_buffers


def _overlap(a, b):
    return a.start <= b.end and b.start <= a.end


def _check_layout(buffers, offsets, total):
    for i, a in enumerate(buffers):
        assert offsets[i] + padded(a.size) <= total
        for j in range(i):
            b = buffers[j]
            if _overlap(a, b):
                assert offsets[i] + a.size <= offsets[j] or offsets[j] + b.size <= offsets[i], (a, b)


def test_chain_reuses_memory():
    bufs = [Buffer(4096, s, s + 1) for s in range(10)]    # each lives two steps: two at a time
    offsets, total, stats = place_buffers(bufs)
    _check_layout(bufs, offsets, total)
    assert total == 2 * 4096 == stats["lower_bound_bytes"]
    assert stats["naive_bytes"] == 10 * 4096


def test_random_lifetimes_never_collide_and_stay_near_the_bound():
    rng = np.random.default_rng(0)
    for trial in range(50):
        bufs = []
        for _ in range(rng.integers(1, 40)):
            s = int(rng.integers(-1, 30))
            bufs.append(Buffer(int(rng.integers(1, 20000)), s, s + int(rng.integers(0, 6))))
        offsets, total, stats = place_buffers(bufs)
        _check_layout(bufs, offsets, total)
        assert total >= lower_bound(bufs)


def test_pure_function():
    bufs = [Buffer(100, 0, 3), Buffer(5000, 1, 2), Buffer(300, 2, 5)]
    assert place_buffers(bufs) == place_buffers(list(bufs))


def test_every_buffer_starts_on_a_cache_line():
    """Small buffers too (they started 16 bytes apart: a 64-byte vector load of an int8
    transformer's 2 KB rows read two cache lines)."""
    bufs = [Buffer(size, i % 5, i % 5 + 2) for i, size in enumerate([3, 17, 100, 5000, 48, 64, 1, 4095, 700, 2080])]
    offsets, total, _ = place_buffers(bufs)
    _check_layout(bufs, offsets, total)
    assert all(o % 64 == 0 for o in offsets), offsets


@pytest.mark.parametrize("name", ["mlp_s", "mlp_m", "cnn_s", "gru_s", "cnn_l"])
def test_zoo_arena_within_ten_percent_of_lower_bound(zoo, name):
    m = nnos.compile(zoo[name], check=False).memory
    assert m.arena_bytes <= 1.1 * m.lower_bound_bytes, m
    if name not in ("mlp_s", "gru_s"):      # three tensors or one step: nothing dies early enough to reuse
        assert m.arena_bytes < 0.8 * m.naive_bytes, m


def test_views_and_in_place_steps_share_buffers(zoo):
    plan = nnos.compile(zoo["cnn_s"], check=False)
    g, mem = plan.graph, plan.memory
    flat = next(n for n in g.nodes if n.op == "Flatten")
    assert mem.tensors[flat.inputs[0]] == mem.tensors[flat.outputs[0]]
    assert g.nodes.index(flat) in mem.skip


@pytest.mark.parametrize("name", ["mlp_m", "cnn_s", "cnn_l"])
def test_no_step_reuses_a_graph_input_s_bytes(zoo, name):
    """Regression: an input's buffer was free after its last read, so later steps wrote there;
    the binder copies a camera frame into the plan only when a new one came, and the next
    inference read whatever a step had left (wrong actions, not an error)."""
    plan = nnos.compile(zoo[name], check=False)
    g, mem = plan.graph, plan.memory
    views = set(g.inputs)
    for s in mem.skip:                          # views of an input share its bytes, by design
        if g.nodes[s].inputs[0] in views:
            views.update(g.nodes[s].outputs)
    spans = [(mem.tensors[i], mem.tensors[i] + g.type_of(i).nbytes) for i in g.inputs]
    for t, off in mem.tensors.items():
        if t in views:
            continue
        end = off + g.type_of(t).nbytes
        assert all(end <= a or b <= off for a, b in spans), (t, off, end, spans)
