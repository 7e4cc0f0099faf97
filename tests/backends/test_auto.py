"""``auto`` chooses by measurement: every backend that builds and passes verification here is
timed on the same inputs, and the fastest p50 runs the plan; the choice says every candidate's
figures and why. A slower backend is never chosen for being earlier in a list."""
from __future__ import annotations

import time

import pytest

import nnos
from nnos.backends import choose, ops_vulkan, prepare
from nnos.backends.report import lines, one_line
from nnos.errors import BackendError


def test_auto_measures_every_candidate_and_runs_the_fastest(zoo):
    exe = prepare(nnos.compile(zoo["mlp_s"]), "auto")
    measured = exe.choice["measured"]
    assert {"cpu", "numpy"} <= set(measured), exe.choice          # both run here (./build.sh installs gcc)
    assert exe.backend == min(measured, key=lambda n: measured[n]["p50_us"])
    assert all(f["runs"] >= 3 * choose.MIN_CALLS and 0 < f["p50_us"] <= f["p99_us"] for f in measured.values())
    assert exe.choice["why"].startswith(f"the fastest measured here: p50 {measured[exe.backend]['p50_us']:g} µs")
    for name in set(["cuda", "vulkan"]) - set(measured):
        assert exe.choice["passed_over"][name].startswith(f"{name} backend: ")
    assert f"measured {exe.backend}: p50" in "\n".join(lines(exe)) and "auto: the fastest" in one_line(exe)


class _Slowed:
    """A verified executable whose every call also waits ``extra`` seconds: a slower device."""

    def __init__(self, exe, extra: float):
        self.exe, self.extra = exe, extra
        self.inputs, self.outputs, self.backend = exe.inputs, exe.outputs, exe.backend

    def run(self):
        self.exe.run()
        time.sleep(self.extra)


def test_the_choice_follows_the_measurement_not_the_order(zoo):
    plan = nnos.compile(zoo["mlp_s"])
    cpu, numpy = plan.bind("cpu"), plan.bind("numpy")
    won = choose.fastest({"cpu": _Slowed(cpu, 0.002), "numpy": numpy}, {}, plan)
    assert won.backend == "numpy" and won.choice["measured"]["cpu"]["p50_us"] > 2000, won.choice
    won = choose.fastest({"cpu": plan.bind("cpu"), "numpy": _Slowed(plan.bind("numpy"), 0.002)}, {}, plan)
    assert won.backend == "cpu"


def test_one_candidate_is_chosen_without_timing_and_none_is_an_error(zoo):
    plan = nnos.compile(zoo["mlp_s"])
    only = choose.fastest({"numpy": plan.bind("numpy")}, {"cpu": "cpu backend: no C compiler"}, plan)
    assert only.choice["measured"] == {} and only.choice["why"] == "the only backend that runs this plan here"
    with pytest.raises(BackendError, match="no backend can run this plan"):
        choose.fastest({}, {"cpu": "cpu backend: no C compiler"}, plan)


@pytest.mark.skipif(ops_vulkan.available() is not None, reason=f"no Vulkan here: {ops_vulkan.available()}")
def test_a_cpu_vulkan_device_is_left_to_the_cpu_backend_unless_asked(zoo, monkeypatch, tmp_path):
    """lavapipe is the CPU itself: auto passes it over by default; with NNOS_VULKAN_CPU=1 it is
    measured like any device — and a 0.5 µs MLP stays on the cpu backend."""
    plan = nnos.compile(zoo["mlp_s"])
    if ops_vulkan._device_kind()[1] != "cpu":
        pytest.skip("this Vulkan device is a GPU")
    assert "CPU implementation" in prepare(plan, "auto").choice["passed_over"]["vulkan"]
    monkeypatch.setenv("NNOS_VULKAN_CPU", "1")
    monkeypatch.setenv("NNOS_VULKAN_CACHE", str(tmp_path))
    exe = prepare(plan, "auto")
    assert "vulkan" in exe.choice["measured"] and exe.backend == "cpu", exe.choice
    assert exe.choice["measured"]["vulkan"]["p50_us"] > exe.choice["measured"]["cpu"]["p50_us"]
