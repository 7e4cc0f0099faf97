"""The manager's reconcile loop with real child processes (no board, no loop)."""
from __future__ import annotations

import time

from nnos.supervisor.manager import Manager
from nnos.supervisor.table import Context, ProcessSpec


def test_a_restart_storm_stops_restarts_with_a_clear_state(tmp_path):
    ctx = Context("", str(tmp_path), None, str(tmp_path / "run"))
    said = []
    crash = ProcessSpec("crasher", lambda c: ["sh", "-c", "exit 3"], storm=(2, 30.0))
    steady = ProcessSpec("steady", lambda c: ["sleep", "30"])
    m = Manager(ctx, [crash, steady], log=said.append, echo=False)
    end = time.monotonic() + 15
    try:
        while time.monotonic() < end and m.status()["crasher"]["gave_up"] is None:
            m.reconcile()
            time.sleep(0.05)
        st = m.status()
        assert st["crasher"]["gave_up"], (st, said)
        assert "restart storm: 3 exits" in st["crasher"]["gave_up"], (st, said)
        assert st["crasher"]["restarts"] == 2
        assert st["crasher"]["last_exit"] == 3
        assert st["steady"]["pid"] is not None                 # the others are untouched
        for _ in range(20):                                    # given up: no more starts
            m.reconcile()
            time.sleep(0.05)
        assert m.status()["crasher"]["pid"] is None
        assert m.status()["crasher"]["restarts"] == 2
        m.retry("crasher")
        m.reconcile()
        assert m.status()["crasher"]["gave_up"] is None
        assert any("not restarting it until asked" in s for s in said)
    finally:
        m.stop()


def test_vm_network_requests_are_checked_and_saved(tmp_path):
    from nnos.legacy import settings
    ctx = Context("", str(tmp_path), None, str(tmp_path / "run"))
    none = Manager(ctx, [ProcessSpec("loop", lambda c: ["sleep", "30"])], log=lambda m: None, echo=False)
    r = none.answer({"cmd": "vm.network", "enabled": True})
    assert not r["ok"]
    assert "no legacy VM" in r["error"]
    m = Manager(ctx, [ProcessSpec("legacy-vm", lambda c: ["sleep", "30"])], log=lambda m: None, echo=False)
    r = m.answer({"cmd": "vm.network", "enabled": "on"})
    assert not r["ok"]
    assert "true or false" in r["error"]
    assert not m.answer({"cmd": "loop.kill"})["ok"]
    r = m.answer({"cmd": "vm.network", "enabled": True})
    assert r["ok"]
    assert settings.load(str(tmp_path))["network"] is True          # kept for its next start
    assert m.answer({"cmd": "vm.network", "enabled": False})["ok"]
    assert settings.load(str(tmp_path))["network"] is False


def test_limits_may_come_from_a_function_of_the_context(tmp_path):
    ctx = Context("", str(tmp_path), None, str(tmp_path / "run"))
    said = []
    spec = ProcessSpec("capped", lambda c: ["sleep", "30"], limits=lambda c: {"cpu_percent": 10, "memory_mb": 64})
    m = Manager(ctx, [spec], log=said.append, echo=False)
    try:
        m.reconcile()
        assert any("capped limited:" in s for s in said), said
    finally:
        m.stop()


def test_off_loop_cpu_keeps_a_process_and_its_threads_off_the_loops_cpu(tmp_path):
    """The broker handles whatever the guest sends: it runs on every CPU but the loop's, from its
    first instruction (set before exec, so threads it starts inherit it), at its nice value."""
    import os

    import pytest
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to keep off")
    ctx = Context("", str(tmp_path), None, str(tmp_path / "run"))
    probe = ["python3", "-c", "import os, threading; t = threading.Thread(target=lambda: print(sorted("
             "os.sched_getaffinity(0)), os.nice(0), flush=True)); t.start(); t.join(); import time; time.sleep(30)"]
    out = tmp_path / "out"
    with open(out, "w") as f:
        m = Manager(ctx, [ProcessSpec("broker", lambda c: probe, nice=7, off_loop_cpu=True),
                          ProcessSpec("plain", lambda c: ["sleep", "30"])], log=lambda m: None, stdout=f, echo=False)
        try:
            m.reconcile()
            end = time.monotonic() + 10
            while time.monotonic() < end and not out.read_text():
                time.sleep(0.05)
            assert out.read_text().strip() == f"{sorted(cpus - {max(cpus)})} 7", out.read_text()
            assert os.sched_getaffinity(m.status()["plain"]["pid"]) == cpus            # the others are untouched
        finally:
            m.stop()


def test_what_starts_after_waits_until_it_is_ready(tmp_path):
    ctx = Context("", str(tmp_path), None, str(tmp_path / "run"))
    flag = tmp_path / "serving"
    server = ProcessSpec("server", lambda c: ["sleep", "30"], ready=lambda c: flag.exists())
    client = ProcessSpec("client", lambda c: ["sleep", "30"], start_after=("server",))
    m = Manager(ctx, [server, client], log=lambda m: None, echo=False)
    try:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            m.reconcile()
            time.sleep(0.05)
        assert m.status()["server"]["pid"] is not None
        assert m.status()["client"]["pid"] is None
        flag.write_text("yes")
        end = time.monotonic() + 2
        while time.monotonic() < end and m.status()["client"]["pid"] is None:
            m.reconcile()
            time.sleep(0.05)
        assert m.status()["client"]["pid"] is not None
    finally:
        m.stop()


def test_one_that_says_it_is_ready_is_not_also_waited_out(tmp_path):
    """Readiness is what a dependent waits for (a simulator's port: the loop starts at once);
    only a process with no way to tell must have run 0.3 s first."""
    ctx = Context("", str(tmp_path), None, str(tmp_path / "run"))
    for ready, waited in ((lambda c: True, False), (None, True)):
        server = ProcessSpec("server", lambda c: ["sleep", "30"], ready=ready)
        client = ProcessSpec("client", lambda c: ["sleep", "30"], start_after=("server",))
        m = Manager(ctx, [server, client], log=lambda m: None, echo=False)
        try:
            t0 = time.monotonic()
            m.reconcile()                                   # starts the server
            m.reconcile()                                   # the client: at once if the server said it is ready
            started = m.status()["client"]["pid"] is not None
            if waited:                                      # (unless the host stalled past the 0.3 s meanwhile)
                assert not started or time.monotonic() - t0 > 0.3, m.status()
            else:
                assert started, m.status()
        finally:
            m.stop()


def test_the_pause_between_reconciles_ends_when_an_awaited_process_is_ready(tmp_path):
    """Between reconciles, only the readiness of a process that another's start waits on is
    looked at, every few ms: the dependent (the loop, after its simulator) starts as soon as the
    next reconcile can, not a whole period later. Nothing awaited: the pause is the period."""
    ctx = Context("", str(tmp_path), None, str(tmp_path / "run"))
    looks = []
    server = ProcessSpec("server", lambda c: ["sleep", "30"], ready=lambda c: looks.append(1) or len(looks) >= 3)
    client = ProcessSpec("client", lambda c: ["sleep", "30"], start_after=("server",))
    m = Manager(ctx, [server, client], log=lambda m: None, echo=False)
    try:
        m.reconcile()                                       # the server starts; the client waits on it
        looks.clear()
        assert [w.spec.name for w in m._awaited()] == ["server"]
        t0 = time.monotonic()
        m._pause(30.0)
        assert len(looks) == 3, looks                       # returned at the look that found it ready
        assert time.monotonic() - t0 < 20, "the pause ran its whole period"
        m.reconcile()
        assert m.status()["client"]["pid"] is not None
        assert m._awaited() == []                           # nothing waits any more: a plain pause
        t0 = time.monotonic()
        m._pause(0.2)
        assert time.monotonic() - t0 >= 0.2
    finally:
        m.stop()


def test_cgroup_v2_limits_hand_the_controllers_down(tmp_path):
    """Against a directory laid out like /sys/fs/cgroup (the real one is exercised on the image)."""
    import os
    import subprocess

    from nnos.supervisor.limits import apply
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "nnos").mkdir()
    (root / "nnos" / "cgroup.subtree_control").write_text("")
    p = subprocess.Popen(["sleep", "30"])
    try:
        said = apply(p.pid, "legacy-vm", 25, 384, None, root=str(root))
        g = root / "nnos" / "legacy-vm"
        assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory"
        assert (root / "nnos" / "cgroup.subtree_control").read_text() == "+cpu +memory"
        assert (g / "cpu.max").read_text() == "25000 100000"
        assert (g / "memory.max").read_text() == str(384 << 20)
        assert (g / "cpu.weight").read_text() == "1"                 # lowest against the root's tasks
        assert (g / "cgroup.procs").read_text() == str(p.pid)
        assert "cpu.max 25% cpu.weight 1 memory.max 384 MiB" in said
        assert os.sched_getscheduler(p.pid) != os.SCHED_IDLE         # a cgroup, not the fallback
    finally:
        p.kill()
        p.wait()


def _beater(tmp_path, beats: str, watchdog_s: float, grace_s: float):
    """A manager of one child that beats under the name "beater" (``beats``: its Python, with ``h``
    its Heartbeat), and the run directory and the manager's log."""
    import sys
    run = str(tmp_path / "run")
    child = [sys.executable, "-c", "import sys, time; from nnos.heartbeat import Heartbeat; "
             f"h = Heartbeat(sys.argv[1], 'beater'); {beats}", run]
    said = []
    spec = ProcessSpec("beater", lambda c: child, heartbeat="beater", watchdog_s=watchdog_s, watchdog_grace_s=grace_s)
    return Manager(Context("", str(tmp_path), None, run), [spec], log=said.append, echo=False), run, said


def test_a_process_that_stops_beating_is_killed_by_its_watchdog(tmp_path):
    """The one heartbeat convention (nnos/heartbeat.py): the child beats under its name for a
    while, then hangs; the manager kills it once the beat is older than its watchdog period."""
    from nnos.heartbeat import Heartbeat, read
    from tests.support.timing import wait_until
    m, run, said = _beater(tmp_path, "[(h.beat(), time.sleep(0.05)) for _ in range(10)]; time.sleep(60)", 1.0, 30.0)
    try:
        m.reconcile()
        first = m.status()["beater"]["pid"]
        wait_until(lambda: read(run, "beater"), 20, "the first heartbeat")

        def killed():
            m.reconcile()
            return any("missed its watchdog" in s for s in said)
        wait_until(killed, 20, "the watchdog")
        assert any(f"beater (pid {first}) missed its watchdog" in s for s in said), said
        assert m.procs["beater"].watchdog_kills == 1
    finally:
        m.stop()
    h = Heartbeat(run, "other")
    assert read(run, "other") is None, "a new heartbeat has not beaten yet"
    h.beat(123)
    assert read(run, "other") == 123


def test_a_start_grace_read_from_settings_at_each_start(tmp_path):
    """The grace for a first heartbeat may be a function of the context (the legacy VM's comes
    from its settings): read at each start; a child silent past it is killed."""
    from tests.support.timing import wait_until
    graces = iter([0.5, 2.5])
    m, run, said = _beater(tmp_path, "time.sleep(60)", 1.0, lambda ctx: next(graces))
    try:
        m.reconcile()
        first = m.status()["beater"]["pid"]
        assert m.procs["beater"].watchdog_grace_s == 0.5

        def killed():
            m.reconcile()
            return any("missed its watchdog (no heartbeat" in s for s in said)
        wait_until(killed, 20, "the watchdog after the grace")

        def restarted():
            m.reconcile()
            return m.status()["beater"]["pid"] not in (None, first)
        wait_until(restarted, 20, "the restart")
        assert m.procs["beater"].watchdog_grace_s == 2.5
    finally:
        m.stop()


def test_a_listening_port_is_told_without_importing_the_idna_codec():
    """The boot timeline polls the control plane's port before the first tick: a plain connect,
    not create_connection (whose getaddrinfo imports encodings.idna, 80 ms of an emulated boot)."""
    import subprocess
    import sys
    code = ("import socket, sys\nfrom nnos.supervisor.table import listening\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); port = s.getsockname()[1]\n"
            "up = listening(port); s.close()\n"
            "print(up, listening(port), 'encodings.idna' in sys.modules)")
    from tests.support.paths import ROOT
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.split() == ["True", "False", "False"], r.stderr


def test_a_heartbeat_read_back_as_zero_between_beats_is_not_a_missed_one(tmp_path):
    """Regression (qemu TCG guests, issue 20): the loop's beat file read back as zeros now and
    then while the loop beat every tick, and the armed watchdog killed a healthy loop at once
    ("no heartbeat"). Only a beat older than the period kills; an odd read is not a beat."""
    import os

    from nnos.heartbeat import path, read
    from tests.support.timing import wait_until
    m, run, said = _beater(tmp_path, "[(h.beat(), time.sleep(0.02)) for _ in range(100000)]", 30.0, 60.0)
    try:
        m.reconcile()
        wait_until(lambda: read(run, "beater"), 20, "the first heartbeat")
        m.reconcile()                                          # armed
        fd = os.open(path(run, "beater"), os.O_WRONLY)
        try:
            for _ in range(20):
                os.pwrite(fd, bytes(8), 0)                     # what the guest's watcher saw
                m.reconcile()
        finally:
            os.close(fd)
        assert not any("missed its watchdog" in s for s in said), said
        assert m.procs["beater"].watchdog_kills == 0
    finally:
        m.stop()
