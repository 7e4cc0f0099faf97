"""The loop's real-time set-up, in a child process as the loop runs it (root or CAP_IPC_LOCK)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

CHILD = r"""
import mmap, sys
from nnos.runtime.realtime import lock_memory

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

def resident_kib():
    return status("RssAnon") + status("RssShmem")

MIB = 1 << 20
inherited = mmap.mmap(-1, 256 * MIB)          # mapped before, never touched: as the supervisor's heap
inherited[:16 * MIB] = b"x" * (16 * MIB)      # 16 MiB of it resident
print(lock_memory())
before = resident_kib()
inherited[64 * MIB:96 * MIB] = b"y" * (32 * MIB)     # touched after the lock: locked on fault
after_touch = resident_kib()
new = mmap.mmap(-1, 64 * MIB)                  # mapped after the lock: locked and populated at once
after_map = resident_kib()
print(before, after_touch, after_map, status("VmLck"))
"""


def test_inherited_pages_lock_on_fault_and_new_mappings_at_once():
    r = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    how, figures = r.stdout.splitlines()[-2:]
    if how.startswith("not locked"):
        pytest.skip(f"this process may not lock memory: {how}")
    assert "on fault" in how, how
    before, after_touch, after_map, locked = (int(x) for x in figures.split())
    mib = 1024
    assert locked >= 256 * mib + 64 * mib, figures      # both mappings are locked
    # the 240 untouched MiB of the inherited mapping were not populated by the lock
    assert 16 * mib <= before < 128 * mib, figures
    assert after_touch - before >= 32 * mib - 64, figures
    assert after_map - after_touch >= 64 * mib - 64, figures
