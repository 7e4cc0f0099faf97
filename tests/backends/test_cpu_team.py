"""The cpu backend on more than one CPU (cpu/team.py): a plan's large steps split between the
calling thread and worker threads started once, pinned, woken per run and asleep between runs.
Each thread computes its own output channels or rows with the same arithmetic as one thread,
so a team's outputs are bitwise one thread's — checked on every zoo model with a split step,
and against the numpy reference."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import nnos
from nnos.backends import prepare
from nnos.backends.cpu.toolchain import find_compiler
from nnos.runtime.slots import model_cpus
from tests.support.alloc import peak_bytes
from tests.support.paths import ROOT
from tests.support.timing import wait_until

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")
EXPORTED = ("act_s", "act_s.dynamo", "mbv2_s", "res5_s")


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path_factory.getbasetemp() / "cpu-cache"))


def path_of(zoo, name: str) -> str:
    return os.path.join(ROOT, "models", "zoo", name + ".onnx") if name in EXPORTED else zoo[name]


def a_worker_cpu() -> int:
    """A CPU other than this thread's, where there is one; -1 (not pinned) on one CPU."""
    mine = sorted(os.sched_getaffinity(0))
    return mine[0] if len(mine) > 1 else -1


def tasks() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def status(tid: str, field: str) -> str:
    with open(f"/proc/self/task/{tid}/status") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith(field + ":"))


@pytest.mark.parametrize("name", ["cnn_s", "cnn_l", "mlp_m", *EXPORTED])
def test_a_team_computes_bitwise_what_one_thread_does(zoo, name):
    plan = nnos.compile(path_of(zoo, name))
    one, team = prepare(plan, "cpu"), prepare(plan, "cpu")
    said = team.use_cpus([a_worker_cpu()])
    assert said.startswith("2 CPUs"), said
    try:
        for seed in range(3):
            feeds = {t.name: np.random.default_rng(seed).standard_normal(t.shape).astype(t.dtype) for t in plan.inputs}
            for exe in (one, team):
                for k, v in feeds.items():
                    np.copyto(exe.inputs[k], v)
                exe.run()
            want = plan(feeds)
            for k in one.outputs:
                assert np.array_equal(team.outputs[k], one.outputs[k]), (name, k, seed)
                np.testing.assert_allclose(team.outputs[k], want[k], rtol=1e-3, atol=1e-4, err_msg=k)
    finally:
        team.close()


def test_workers_start_once_pinned_run_without_allocating_and_end_with_the_team(zoo):
    plan = nnos.compile(zoo["cnn_s"])
    exe = prepare(plan, "cpu")
    before = tasks()
    cpu = a_worker_cpu()
    exe.use_cpus([cpu])
    started = tasks() - before
    assert len(started) == 1, started
    worker = started.pop()
    if cpu >= 0:
        assert status(worker, "Cpus_allowed_list") == str(cpu)
    peak = peak_bytes(exe.run, 500, warmup=50)
    assert peak < 2048, peak
    assert tasks() - before == {worker}                # the same worker, woken per run
    exe.use_cpus([cpu])                                # a new team replaces the old one
    assert len(tasks() - before) == 1 and worker not in tasks()
    exe.close()
    assert tasks() - before == set()
    exe.run()                                          # one thread again
    exe.use_cpus([cpu])
    assert len(tasks() - before) == 1
    del exe
    gc.collect()                                       # the workers end with the object
    assert tasks() - before == set()


def test_between_runs_the_workers_sleep(zoo):
    """They spin only within a run (and a millisecond after it): a loop's idle time between
    ticks costs the other CPU nothing."""
    exe = prepare(nnos.compile(zoo["cnn_s"]), "cpu")
    before = tasks()
    exe.use_cpus([a_worker_cpu()])
    (worker,) = tasks() - before
    try:
        exe.run()
        wait_until(lambda: status(worker, "State").startswith("S"), 5, "the worker to sleep after a run")
        exe.run()                                      # and it wakes for the next
        wait_until(lambda: status(worker, "State").startswith("S"), 5, "the worker to sleep again")
    finally:
        exe.close()


def test_a_plan_without_a_large_step_stays_on_one_thread(zoo):
    exe = prepare(nnos.compile(zoo["mlp_s"]), "cpu")
    before = tasks()
    assert exe.use_cpus([a_worker_cpu()]) == "1 CPU (no step of this plan is large enough to split)"
    assert tasks() == before


def test_the_boards_model_cpus_on_the_loops_thread(zoo):
    """A loop pinned to one CPU gives the workers the next CPUs it does not own; one not pinned
    leaves them unpinned; numpy and a board's 1 stay on one thread."""
    plan = nnos.compile(zoo["cnn_s"])
    exe = prepare(plan, "cpu")
    assert model_cpus(exe, 1) == "1 CPU" and not exe.facts.get("cpus")
    assert model_cpus(prepare(plan, "numpy"), 2) == "1 CPU (the numpy backend runs a plan on one thread)"
    mine = os.sched_getaffinity(0)
    if len(mine) > 1:
        assert model_cpus(exe, 2) == "2 CPUs (workers on CPU any) (not pinned: the loop is not)"
        exe.close()
        # never more threads than this process has CPUs: a thread waiting at a barrier spins
        said = model_cpus(exe, len(mine) + 3)
        assert said.startswith(f"{len(mine)} CPUs"), said
        exe.close()
        loop_cpu = max(mine)
        os.sched_setaffinity(0, {loop_cpu})
        try:
            said = model_cpus(exe, 3)
        finally:
            os.sched_setaffinity(0, mine)
        other = min(c for c in range(os.cpu_count()) if c != loop_cpu)
        if os.cpu_count() == 2:
            assert said == f"2 CPUs (workers on CPU {other}) of the 3 asked for", said
        assert exe.facts["cpus"][1] == other
    exe.close()
