"""Where the CPUs went between two moments of a boot (boot diagnostics: ``nnos.bootcpu`` on the
kernel command line). PID 1 takes a snapshot of every process's CPU time at the first tick and
another once the control plane answers, and stamps the difference on the console: the processes
that used the most, then the CPUs' time by kind (user, nice, system, idle, iowait) — what the
control plane's start-up shared the CPUs with.

Each process's time is its own (utime + stime) and its exited children's that it collected
(cutime + cstime: udevd's workers, a shell's commands); a process is known by its pid and start
time, so a reused pid is a new process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

KINDS = ("user", "nice", "system", "idle", "iowait")


@dataclass(frozen=True)
class Usage:
    """One process's CPU seconds so far."""
    name: str
    own: float
    children: float
    nice: int


def _process(proc: str, pid: str, tick: float) -> tuple[tuple[int, int], Usage] | None:
    try:
        with open(os.path.join(proc, pid, "stat")) as f:
            stat = f.read()
    except OSError:                    # exited since the listing
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()        # fields[0] is the state, field 3 of proc(5)
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    nice, start = int(fields[16]), int(fields[19])
    return (int(pid), start), Usage(comm, (utime + stime) * tick, (cutime + cstime) * tick, nice)


def snapshot(proc: str = "/proc") -> dict:
    """{(pid, start time): Usage} for every process, and "machine": the CPUs' seconds by kind."""
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    out: dict = {}
    for pid in os.listdir(proc):
        if pid.isdigit() and (p := _process(proc, pid, tick)) is not None:
            out[p[0]] = p[1]
    with open(os.path.join(proc, "stat")) as f:
        cpu = f.readline().split()[1:]            # user nice system idle iowait irq softirq steal
    out["machine"] = [int(x) * tick for x in cpu[:len(KINDS)]]
    return out


def report(before: dict, after: dict, what: str, top: int = 8) -> list[str]:
    """The console lines for the time between two snapshots: the ``top`` processes by CPU
    seconds (a process that started in between counts from its start), then the CPUs' time."""
    rows = []
    for key, u in after.items():
        if key == "machine":
            continue
        was = before.get(key, Usage(u.name, 0.0, 0.0, u.nice))
        own, children = u.own - was.own, u.children - was.children
        if own + children > 0:
            rows.append((own + children, key[0], u, children))
    lines = []
    for total, pid, u, children in sorted(rows, key=lambda r: -r[0])[:top]:
        kids = f"; {children:.2f} of it its exited children" if children else ""
        lines.append(f"boot cpu: {total:.2f} s {u.name} (pid {pid}, nice {u.nice}{kids})")
    kinds = ", ".join(f"{k} {b - a:.2f}" for k, a, b in zip(KINDS, before["machine"], after["machine"]))
    return lines + [f"boot cpu: {what}, the CPUs' seconds: {kinds}"]      # last: the report is complete
