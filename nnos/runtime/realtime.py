"""Real-time setup for the loop process: SCHED_FIFO, a dedicated CPU, locked memory, fine timer
slack. Each is asked for; what is refused is reported, never fatal."""
from __future__ import annotations

import ctypes
import os
import sys

from ..timing import set_timer_slack

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4


GIL_SWITCH_S = 0.0002          # Python's default, 5 ms, is half a 100 Hz tick


def setup(priority: int = 50, cpu: int | None = None) -> dict:
    report = {}
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        report["sched"] = f"SCHED_FIFO priority {priority}"
    except (PermissionError, OSError) as e:
        report["sched"] = f"normal scheduling (SCHED_FIFO refused: {e.strerror or e}; run as root or grant CAP_SYS_NICE)"
    cpus = sorted(os.sched_getaffinity(0))
    if cpu is None:
        cpu = loop_cpu()
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
            report["cpu"] = f"pinned to CPU {cpu} of {cpus}"
        except OSError as e:
            report["cpu"] = f"not pinned ({e.strerror})"
    else:
        report["cpu"] = "not pinned (one CPU)"
    report["memory"] = lock_memory()
    report["timer_slack"] = "1 ns" if set_timer_slack(1) else "default (50 µs)"
    return report


def lock_memory() -> str:
    """Every page the loop uses stays in RAM. What it maps from now on (its arena, its model's
    buffers) is locked and populated when mapped, as before its first tick. What it inherited
    from the process it was forked from (the supervisor's whole address space) is locked on
    fault: the pages already resident at once, the others the first time the loop touches them.
    Locking all of it up front populated and copied every inherited page, most of which the
    loop never uses: 0.9 s of the boot under emulation. A kernel without MCL_ONFAULT (before
    4.4) locks everything up front."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(MCL_CURRENT | MCL_ONFAULT) == 0 and libc.mlockall(MCL_FUTURE) == 0:
            return "locked (mlockall: inherited pages on fault, new mappings at once)"
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0:
            return "locked (mlockall)"
        return f"not locked (mlockall: {os.strerror(ctypes.get_errno())})"
    except (OSError, AttributeError) as e:
        return f"not locked ({e})"


def gil_for(devices: dict) -> str | None:
    """A camera's capture thread holds the GIL between its numpy calls at frame rate: the loop,
    woken by its timer, would wait for it up to Python's switch interval (5 ms, half a 100 Hz
    tick: the vision benchmark's missed ticks; at 1 ms it still missed 12 of 1500). With such a
    device the interval is 200 µs, set once the loop is about to tick. Other boards keep the default: a servo bus thread spins
    ~200 µs for its answers, and at a 200 µs interval it took the GIL from the loop's start-up
    (a watchdog kill in the SO-101 system test; repeated ones in the emulated image)."""
    holders = [name for name, dev in devices.items() if getattr(dev, "holds_gil", False)]
    if not holders:
        return None
    sys.setswitchinterval(GIL_SWITCH_S)
    verb = "decodes" if len(holders) == 1 else "decode"
    return f"GIL switch interval {GIL_SWITCH_S * 1e6:.0f} µs ({', '.join(holders)} {verb} frames)"


def loop_cpu() -> int | None:
    """The CPU the loop pins itself to: the highest this process may use; None with only one."""
    cpus = os.sched_getaffinity(0)
    return max(cpus) if len(cpus) > 1 else None


def cpus_not_mine() -> set[int]:
    """For a process pinned to some CPUs (the loop): the machine's other CPUs (its own when it
    has them all), where work it starts should run."""
    mine = os.sched_getaffinity(0)
    return (set(range(os.cpu_count() or 1)) - mine) or set(mine)


def other_cpus(loop_cpu: int | None) -> set[int]:
    cpus = set(os.sched_getaffinity(0))
    return cpus - {loop_cpu} if loop_cpu is not None and len(cpus) > 1 else cpus
