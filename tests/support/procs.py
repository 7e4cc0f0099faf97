"""Processes as /proc shows them."""
from __future__ import annotations


def state(pid: int) -> str | None:
    """Its state letter (R, S, Z, …), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for its parent to collect it."""
    return state(pid) in (None, "Z")
