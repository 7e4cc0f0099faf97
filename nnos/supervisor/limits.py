"""Resource limits for a supervised process that must never compete with the loop (the legacy
VM): cgroup v2 cpu.max / memory.max where the unified hierarchy is mounted (the image's init
mounts it), else SCHED_IDLE; and always off the loop's CPU.
"""
from __future__ import annotations

import os

from ..runtime.realtime import other_cpus

CGROUP = "/sys/fs/cgroup"


def cgroup_v2(root: str = CGROUP) -> bool:
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def apply(pid: int, name: str, cpu_percent: int, memory_mb: int, avoid_cpu: int | None, root: str = CGROUP) -> str:
    """Limit ``pid``; returns what was applied, for the log."""
    done = []
    cpus = other_cpus(avoid_cpu)                # the loop's CPU is decided in one place: runtime/realtime.py
    if avoid_cpu is not None and cpus != set(os.sched_getaffinity(0)):
        try:
            os.sched_setaffinity(pid, cpus)
            done.append(f"CPUs {sorted(cpus)}")
        except OSError as e:
            done.append(f"affinity not set ({e.strerror})")
    if cgroup_v2(root):
        group = os.path.join(root, "nnos", name)
        try:
            os.makedirs(group, exist_ok=True)
            # each level hands the controllers down: the root to nnos/, nnos/ to its groups
            for parent in (root, os.path.join(root, "nnos")):
                with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                    f.write("+cpu +memory")
            with open(os.path.join(group, "cpu.max"), "w") as f:
                f.write(f"{cpu_percent * 1000} 100000")
            # the lowest weight: a group competes with the root's tasks as one entity of its own
            # weight (100, like nice 0, by default), whatever the nice value inside it
            with open(os.path.join(group, "cpu.weight"), "w") as f:
                f.write("1")
            with open(os.path.join(group, "memory.max"), "w") as f:
                f.write(str(memory_mb << 20))
            with open(os.path.join(group, "cgroup.procs"), "w") as f:
                f.write(str(pid))
            done.append(f"cgroup {group}: cpu.max {cpu_percent}% cpu.weight 1 memory.max {memory_mb} MiB")
            return ", ".join(done)
        except OSError as e:
            done.append(f"cgroup v2 refused ({e.strerror})")
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        done.append("SCHED_IDLE (no cgroup v2 here: memory bounded by the VM's own size)")
    except OSError as e:
        done.append(f"SCHED_IDLE refused ({e.strerror})")
    return ", ".join(done)
