"""PID 1's boot timeline (nnos/supervisor/pid1.py)."""
from __future__ import annotations

import time

import numpy as np

from nnos.supervisor.pid1 import BootTimeline
from nnos.telemetry import TelemetryWriter
from nnos.timeline import parse, since_boot


def test_the_first_tick_is_stamped_at_its_own_time_not_when_it_was_noticed(tmp_path, capsys):
    """The supervisor notices the loop's first tick between starting the processes that wait for
    it (a second late under emulation): the timeline says when the tick was, from its record."""
    tel = TelemetryWriter(str(tmp_path / "telemetry"))
    timeline = BootTimeline(str(tmp_path), api_port=0)
    timeline.poll()
    assert "first tick" not in capsys.readouterr().err
    ticked = time.monotonic_ns() - 3_000_000_000            # the tick was 3 s ago
    tel.add("ticks")
    tel.record(0, ticked, 0, 0, 0, 0, 1, 0, np.zeros(1, np.float32), np.zeros(1, np.float32))
    noticed = since_boot()
    timeline.next_check = 0.0                                # it polls every 50 ms
    timeline.poll()
    (at, event), = parse(capsys.readouterr().err)
    assert event.startswith("loop: first tick")
    assert noticed - 3.1 < at < noticed - 2.9, (at, noticed)
    tel.close()
