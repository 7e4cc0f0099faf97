"""nnos-init's hand-over (nnos/appliance.py), off the device: the boot steps' result starts the
supervisor in the same process, in the environment they made, through the supervisor's own
parser (not the CLI's: building that was ≈ 0.25 s of an emulated boot); a supervisor that
returns is replaced by a fresh one (PID 1 must never exit)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import ROOT

CODE = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import nnos.boot.init as init
import nnos.appliance as appliance
pid = os.getpid()

def boot(beside=None):
    print("boot steps", flush=True)
    beside()
    print("imported beside them:", "numpy" in sys.modules and "nnos.supervisor.up" in sys.modules, flush=True)
    return ["up", "--init", "--board", "b.toml", "--data", "d"], dict(os.environ, NNOS_TEST_MARK="given")

init.main = boot
import nnos.supervisor.up as supervisor

def up(board, data, duration, show_status, plan=None, default_board=None, init=False):
    print("supervisor:", board, data, duration, plan, init, "pid", os.getpid() == pid,
          "mark:", os.environ.get("NNOS_TEST_MARK"), "cli:", "nnos.cli" in sys.modules, flush=True)
    return 0
supervisor.up = up

def execve(path, argv, env):
    print("same process:", os.getpid() == pid,
          "mark:", os.environ.get("NNOS_TEST_MARK"), "exec:", argv[1:], flush=True)
    os._exit(7)
appliance.os.execve = execve
appliance.main()
"""


def test_the_supervisor_runs_in_the_init_process_then_a_returned_one_is_executed_anew():
    r = subprocess.run([sys.executable, "-c", CODE, ROOT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 7, r.stderr
    out = r.stdout
    assert "boot steps" in out
    assert "imported beside them: True" in out          # the supervisor's imports, while a child runs the steps
    assert "supervisor: b.toml d None None True pid True mark: given cli: False" in out   # here, in this process
    assert "same process: True mark: given" in out
    assert "exec: ['-m', 'nnos.cli', 'up', '--init', '--board', 'b.toml', '--data', 'd']" in out


def test_init_stamps_its_start_before_importing_anything_else():
    """"init: started" is stamped as the boot benchmark's reference stamps it: after Python's own
    start-up and nnos's few lines to write it (nnos, its errors, appliance, timeline; gc is
    built in), nothing else imported — so init → first tick counts the same work for both."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules)\n"
            "import nnos.appliance; from nnos.timeline import stamp; stamp('init: started')\n"
            "new = sorted(set(sys.modules) - before); import json; print(json.dumps(new))")
    r = subprocess.run([sys.executable, "-I", "-c", code, ROOT], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "init: started" in r.stderr
    assert json.loads(r.stdout) == ["gc", "nnos", "nnos.appliance", "nnos.errors", "nnos.timeline"]
