"""One supervisor per data directory, and no process outliving it.

``nnos up`` holds an exclusive lock on DATA/run/supervisor.lock (with its pid in it) for as
long as it runs: a second one on the same data directory is refused with the first one's pid.
Every child dies with the supervisor (PR_SET_PDEATHSIG) and runs in its own process group,
whose ids are written to DATA/run/children.json; a supervisor that starts after a `kill -9`
ends the groups its predecessor left behind before it starts anything.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import time

from ..errors import NnosError
from ..fsutil import atomic_write, pid_alive
from ..kvm import boot_id

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class AlreadyRunning(NnosError):
    pass


def hold_lock(run: str):
    """Take DATA/run/supervisor.lock or raise AlreadyRunning naming the holder. The returned
    file must stay open while the supervisor runs (closing it releases the lock)."""
    path = os.path.join(run, "supervisor.lock")
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise AlreadyRunning(f"another nnos up (pid {holder}) is running on {os.path.dirname(run)}: "
                             "stop it first, or give another --data directory") from e
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def die_with_parent() -> None:
    """In a child between fork and exec: SIGTERM when the supervisor dies, however it dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record_children(run: str, pids: dict[str, int]) -> None:
    """Best effort (a full disk must not stop a start): the next supervisor uses it to end
    what a killed one left behind — in this boot only (pids start over after a reboot)."""
    try:
        os.makedirs(run, exist_ok=True)
        atomic_write(os.path.join(run, "children.json"),
                     json.dumps({"boot": boot_id(), **{name: [pid, start_time(pid)] for name, pid in pids.items()}}).encode())
    except OSError:
        pass


def end_orphans(run: str, log=print, grace_s: float = 5.0) -> list[str]:
    """End the process groups a previous supervisor of this data directory left running (it was
    killed with -9 and its children outlived it). Returns their names."""
    path = os.path.join(run, "children.json")
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return []
    if recorded.pop("boot", None) != boot_id():
        os.unlink(path)                               # another boot's pids mean nothing now
        return []
    alive = {name: pid for name, (pid, started) in recorded.items()
             if isinstance(pid, int) and pid > 1 and started and start_time(pid) == started}
    for name, pid in alive.items():
        log(f"supervisor: ending {name} (pid {pid}), left running by a previous supervisor")
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(pid_alive(p) and start_time(p) for p in alive.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive.values():
        _signal_group(pid, signal.SIGKILL)
    os.unlink(path)
    return sorted(alive)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
