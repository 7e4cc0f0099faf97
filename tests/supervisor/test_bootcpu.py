"""Where the CPUs went between two moments of a boot (nnos/supervisor/bootcpu.py), from this
machine's own /proc: a process that burns CPU in between tops the report, a shell's exited
child is counted as the shell's, and a pid reused by a new process counts from its start."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from nnos.supervisor import bootcpu
from nnos.supervisor.pid1 import BootTimeline
from tests.support.timing import wait_until

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _usage(lines: list[str], pid: int) -> float:
    line = next((x for x in lines if f"(pid {pid}," in x), None)
    assert line is not None, lines
    return float(re.match(r"boot cpu: (\d+\.\d+) s ", line)[1])


def test_a_process_that_burns_cpu_in_between_tops_the_report_and_the_cpus_line_comes_last():
    before = bootcpu.snapshot()
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.4) + "import signal; signal.pause()"])
    try:
        wait_until(lambda: _cpu_of(child.pid) >= 0.4, 60, "the child to burn its 0.4 s", 0.02)
        lines = bootcpu.report(before, bootcpu.snapshot(), "between", top=3)
    finally:
        child.kill()
        child.wait()
    assert 0.35 < _usage(lines, child.pid) < 5.0, lines
    assert len(lines) <= 4
    assert lines[-1].startswith("boot cpu: between, the CPUs' seconds: user ")
    kinds = dict(re.findall(r"(\w+) (\d+\.\d+)", lines[-1].split(": ", 2)[2]))
    assert set(kinds) == set(bootcpu.KINDS), lines[-1]
    assert float(kinds["user"]) + float(kinds["system"]) >= 0.35, lines[-1]     # its clock reads are system time


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_exited_child_counts_as_its_parents():
    before = bootcpu.snapshot()
    shell = subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{BURN.format(s=0.3)}'; echo done; exec sleep 60"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert shell.stdout.readline() == "done\n"          # its child ran and was collected
        lines = bootcpu.report(before, bootcpu.snapshot(), "between")
    finally:
        shell.kill()
        shell.wait()
    line = next(x for x in lines if f"(pid {shell.pid}," in x)
    kids = float(re.search(r"; (\d+\.\d+) of it its exited children", line)[1])
    assert kids >= 0.25 and _usage(lines, shell.pid) >= kids, line


def _fake_proc(root, pid: int, start: int, utime: int, comm: str = "worker") -> None:
    os.makedirs(root / str(pid), exist_ok=True)
    rest = ["S"] + ["0"] * 10 + [str(utime), "0", "0", "0", "20", "0", "1", "0", str(start)] + ["0"] * 30
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")
    (root / "stat").write_text("cpu  100 0 50 1000 0 0 0 0 0 0\n")


def test_a_reused_pid_is_a_new_process(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    _fake_proc(tmp_path, 42, start=1000, utime=5 * tick, comm="old one")
    before = bootcpu.snapshot(str(tmp_path))
    _fake_proc(tmp_path, 42, start=2000, utime=tick, comm="new one")       # the old one exited, pid reused
    lines = bootcpu.report(before, bootcpu.snapshot(str(tmp_path)), "between")
    assert lines[0] == "boot cpu: 1.00 s new one (pid 42, nice 0)", lines


def test_the_timeline_reports_once_the_control_plane_answers_only_when_asked(tmp_path, capsys):
    """The snapshot is taken at the loop's first tick (seen in its telemetry) only with ``cpu``;
    the report follows 'control plane: ready' only then."""
    import socket

    import numpy as np
    from nnos.telemetry import TelemetryWriter
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        for cpu in (False, True):
            run = tmp_path / str(cpu)
            run.mkdir()
            tel = TelemetryWriter(str(run / "telemetry"))
            tel.add("ticks")
            tel.record(0, time.monotonic_ns(), 0, 0, 0, 0, 1, 0, np.zeros(1, np.float32), np.zeros(1, np.float32))
            timeline = BootTimeline(str(run), api_port=port, cpu=cpu)
            timeline.poll()
            tel.close()
            err = capsys.readouterr().err
            assert "loop: first tick" in err and "control plane: ready" in err, err
            assert (timeline.cpu_at_tick is not None) == cpu
            assert ("boot cpu: first tick to control plane ready, the CPUs' seconds: " in err) == cpu, err
    finally:
        server.close()
