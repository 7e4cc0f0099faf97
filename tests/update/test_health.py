"""The health-gated commit's judgement (nnos.update.health.healthy_for) over the statuses a device
answers, on a clock that advances one poll at a time; and the update record's states."""
from __future__ import annotations

import pytest

from nnos.update import record
from nnos.update.health import Unhealthy, healthy_for, probation_of


class Device:
    """/v1/status as a booted device answers it, one poll a second: ``script`` (t → status or an
    OSError for a control plane that does not answer) decides what each poll sees."""

    def __init__(self, script):
        self.t, self.script = 0.0, script

    def clock(self) -> float:
        return self.t

    def status(self) -> dict:
        self.t += 1.0
        got = self.script(self.t)
        if isinstance(got, Exception):
            raise got
        return got


def running(t, **loop) -> dict:
    return {"loop": {"mode": "running", "ticks": int(t * 50), "active": "m1", "failsafe": False, **loop},
            "store": {"active": "m1"}}


def judge(script, seconds=10.0, deadline=60.0):
    dev = Device(script)
    healthy_for(seconds, dev.status, deadline, poll_s=0, clock=dev.clock)
    return dev.t


def test_healthy_once_the_loop_ticked_long_enough_on_its_active_model_with_the_api_answering():
    # the control plane comes up 5 s after the boot: not yet answering is not a failure
    t = judge(lambda t: ConnectionRefusedError() if t < 5 else running(t))
    assert 15 <= t <= 17


@pytest.mark.parametrize("what,script,why", [
    ("a failsafe", lambda t: running(t, failsafe=t > 8, failsafe_reason="device lost"), "failed safe: device lost"),
    ("the API goes away", lambda t: OSError("refused") if t > 8 else running(t), "stopped answering"),
    ("the loop stops ticking", lambda t: running(min(t, 6)), "stopped ticking"),
    ("another model runs", lambda t: running(t, active="m0" if t > 6 else "m1"), "stopped ticking on its active model"),
    ("never healthy", lambda t: OSError("refused"), "not healthy for 10 s within 60 s"),
])
def test_unhealthy_is_named(what, script, why):
    with pytest.raises(Unhealthy, match=why):
        judge(script)


def test_the_record_moves_through_its_states_and_says_why(tmp_path):
    data = str(tmp_path)
    assert record.load(data) is None and record.summary(None) is None
    record.save(data, {"state": "installing", "to": {"slot": "B", "version": "0.2"}})
    record.change(data, "installed")
    assert record.summary(record.load(data)) == "installed: 0.2 into slot B"
    record.change(data, "probation", probation_s=60)
    assert "on probation" in record.summary(record.load(data))
    record.change(data, "rolled back", why="the loop failed safe: device lost")
    assert record.summary(record.load(data)) == \
        "rolled back because the loop failed safe: device lost (0.2 into slot B)"
    (tmp_path / record.NAME).write_text("{torn")
    assert record.load(data) is None                      # a torn record is no record


def test_the_probation_an_update_asked_for_is_kept_even_zero():
    # regression: probation_s=0 from the API fell back to the 60 s default
    assert probation_of({"probation_s": 0}, 60.0) == 0.0
    assert probation_of({"probation_s": 20}, 60.0) == 20.0
    assert probation_of({"probation_s": None}, 60.0) == probation_of({}, 60.0) == 60.0


def test_a_verdict_counts_for_its_own_boot_only(tmp_path):
    run = str(tmp_path / "run")
    assert record.judged(run, boot="b1") is None
    record.judge(run, "committed", boot="b1")
    assert record.judged(run, boot="b1") == "committed"
    assert record.judged(run, boot="b2") is None                 # the next boot is judged again
    assert len(record.boot_id()) == 36                           # this kernel's boot id


def test_an_install_cut_off_is_failed_with_why_at_the_next_boot(tmp_path):
    data = str(tmp_path)
    assert record.interrupted(data) is None
    record.save(data, {"state": "installing", "to": {"slot": "B", "version": "0.2"}})
    rec = record.interrupted(data)
    assert rec["state"] == "failed" and "cut off" in rec["why"] and "slot B" in rec["why"], rec
    assert record.interrupted(data) is None                      # said once
    record.change(data, "installed")
    assert record.interrupted(data) is None                      # a finished install is not touched
