"""One supervisor per data directory; no child outlives it (regressions from the hardening
issue: `kill -9` of `nnos up` left its children running, and a second `nnos up` on the same
data directory ran two loops and two simulators)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from nnos.supervisor.ownership import boot_id, end_orphans, hold_lock, record_children, start_time
from tests.support.procs import state


def test_a_second_holder_of_a_data_directory_is_refused_with_the_first_ones_pid(tmp_path):
    run = str(tmp_path)
    held = hold_lock(run)
    code = ("import sys; sys.path.insert(0, sys.argv[2]);"
            "from nnos.supervisor.ownership import hold_lock; hold_lock(sys.argv[1])")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    other = subprocess.run([sys.executable, "-c", code, run, root], capture_output=True, text=True, timeout=60)
    assert other.returncode != 0
    assert f"another nnos up (pid {os.getpid()})" in other.stderr
    held.close()                                            # released: the next one gets it
    again = subprocess.run([sys.executable, "-c", code, run, root], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr


def test_orphans_a_killed_supervisor_left_are_ended_and_reused_pids_spared(tmp_path):
    run = str(tmp_path)
    orphan = subprocess.Popen(["sleep", "600"], start_new_session=True)
    spared = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        record_children(run, {"loop": orphan.pid})
        # a recorded pid whose process started at another time is someone else's now
        with open(os.path.join(run, "children.json")) as f:
            text = f.read()
        text = text[:-1] + f', "sim": [{spared.pid}, "{int(start_time(spared.pid)) - 1}"]}}'
        with open(os.path.join(run, "children.json"), "w") as f:
            f.write(text)
        lines = []
        assert end_orphans(run, lines.append) == ["loop"]
        record_children(run, {"loop": spared.pid})          # recorded in another boot: left alone
        text = open(os.path.join(run, "children.json")).read()
        with open(os.path.join(run, "children.json"), "w") as f:
            f.write(text.replace(boot_id(), "another-boot"))
        assert end_orphans(run, lines.append) == []
        assert spared.poll() is None
        assert orphan.wait(10) is not None
        assert spared.poll() is None
        assert "ending loop" in lines[0]
        assert not os.path.exists(os.path.join(run, "children.json"))
    finally:
        for p in (orphan, spared):
            p.kill()
            p.wait()


def test_children_die_with_the_manager_however_it_dies(tmp_path):
    code = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from nnos.supervisor.manager import _child_setup
from nnos.supervisor.table import ProcessSpec
import subprocess
spec = ProcessSpec("c", lambda ctx: ["sleep", "600"])
p = subprocess.Popen(["sleep", "600"], preexec_fn=_child_setup(spec), start_new_session=True)
print(p.pid, flush=True)
time.sleep(600)
"""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), root], stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and start_time(child) is not None and state(child) != "Z":
        time.sleep(0.02)
    assert start_time(child) is None or state(child) == "Z", "the child outlived its supervisor"
