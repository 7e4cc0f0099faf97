"""nnos-init's boot steps run in a child process beside PID 1's own work (the supervisor's
imports), off the device: both run at once; a child that dies leaves the supervisor what it
needs (the fallback)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

CODE = r"""
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import nnos.boot.init as init
tmp, how = sys.argv[2], sys.argv[3]
init.early = lambda: None
init.supervisor_command = lambda: ([], {})
init.fallback = lambda: print("fallback", flush=True)

def wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.path.exists(path)

def steps():
    if how == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "exit":                               # not an Exception: steps() does not catch it
        raise SystemExit(3)
    saw = wait_for(f"{tmp}/imports-began")         # only if both run at once
    open(f"{tmp}/steps-done", "w").write(f"{os.getpid()} {saw}")

def imports():
    open(f"{tmp}/imports-began", "w").write(str(os.getpid()))
    if how == "run":
        print("imports saw the steps end:", wait_for(f"{tmp}/steps-done"), flush=True)

init.steps = steps
init.main(beside=imports)
if how == "run":
    pid, saw = open(f"{tmp}/steps-done").read().split()
    print("steps in another process:", int(pid) != os.getpid(), "saw the imports begin:", saw, flush=True)
"""


def run(tmp_path, how: str) -> str:
    r = subprocess.run([sys.executable, "-c", CODE, ROOT, str(tmp_path), how], capture_output=True, text=True,
                       cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def test_the_boot_steps_run_in_a_child_at_the_same_time_as_the_imports(tmp_path):
    out = run(tmp_path, "run")
    assert "steps in another process: True saw the imports begin: True" in out, out
    assert "imports saw the steps end: True" in out
    assert "init: starting the supervisor" in out
    assert "fallback" not in out


@pytest.mark.parametrize("how", ["die", "exit"])
def test_a_boot_steps_process_that_dies_leaves_the_supervisor_its_fallback(tmp_path, how):
    out = run(tmp_path, how)
    assert "the boot steps' process ended with status" in out, out
    assert "fallback" in out
    assert "init: starting the supervisor" in out


LOAD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import nnos.boot.init as init
init.BOARD_MODULES = sys.argv[2]
init.load_modules()
"""


@pytest.mark.parametrize("board_modules", ["i6300esb  # the watchdog\n", None])
def test_the_partitions_filesystems_load_in_the_boot_steps(tmp_path, board_modules):
    """ext4 and vfat are not in the initramfs (on the way to the first tick): the boot steps load
    them, beside PID 1's imports, before the data partition is mounted — with the board's modules,
    or alone when it has none. (A modprobe on PATH that records what it was asked for.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "modprobe").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/asked\n')
    (bin_dir / "modprobe").chmod(0o755)
    listed = tmp_path / "modules"
    if board_modules is not None:
        listed.write_text(board_modules)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", LOAD, ROOT, str(listed)], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    asked = (tmp_path / "asked").read_text().split()
    assert asked[:6] == ["-a", "-q", "ext4", "vfat", "nls_cp437", "nls_ascii"]
    assert asked[6:] == (["i6300esb"] if board_modules else [])
