"""The cpu backend: the whole plan as one generated C function (cpu/codegen.py and the op
families it calls), compiled once into a cached shared object (cpu/toolchain.py) and called
once per run through ctypes with prebuilt pointers: the arena, the weight table, the workspace.
"""
from __future__ import annotations

import ctypes
import json
import os
import time
import weakref

import numpy as np

from .. import flags
from ..digest import sha256
from ..errors import BackendError
from ..fsutil import atomic_write
from ..ir import aligned
from .base import Arena, Executable, aligned_zeros
from .cpu import record, source_and_program, width
from .cpu.emit import Unsupported
from .cpu.team import MAX_THREADS
from .cpu.toolchain import ToolchainError, build, carries, find_compiler, load, root_slot, target, verification_mark


class CpuExecutable(Executable):
    backend = "cpu"

    def __init__(self, plan, profile: bool = False):
        """``profile``: an object that can also time each step (cpu/profile.py; ``step_times``)."""
        super().__init__(plan)
        t0 = time.perf_counter()
        lib, facts, vw, workspace, consts = _generated(plan, profile) if profile else \
            _recorded(plan) or _generated(plan)
        self._steps = facts.pop("profiled_steps", [])
        self.absorbed = facts.pop("absorbed_steps", {})   # step → the steps it also runs (codegen._absorbed)
        self.facts = dict(facts, vector_floats=vw, compile_s=round(time.perf_counter() - t0, 3))
        self.arena = Arena(plan, extra=64)              # generated loops may read a vector past the end
        self.workspace = aligned_zeros(max(workspace, 64))
        self._consts = [aligned(c) for c in consts]      # kept alive: the table points into them
        self._table = (ctypes.c_void_p * max(1, len(consts)))(*[c.ctypes.data for c in self._consts])
        fn = lib.nnos_run
        fn.restype = None
        fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        self._lib, self._fn = lib, fn
        self._args = (self.arena.address, ctypes.addressof(self._table), self.workspace.ctypes.data)
        self.inputs, self.outputs = self.arena.io()

    def run(self) -> None:
        self._fn(*self._args)

    def step_times(self, calls: int) -> list[tuple[int, float]]:
        """(step index, mean ns) for each step the object runs, over ``calls`` runs on one
        thread; only for an object made with ``profile``."""
        fn = getattr(self._lib, "nnos_profile", None)
        if fn is None:
            raise BackendError("this cpu object was not built to time its steps (CpuExecutable(plan, profile=True))")
        fn.restype, fn.argtypes = None, (ctypes.c_void_p,) * 4
        ns = np.zeros(len(self._steps), np.int64)
        for _ in range(calls):
            fn(*self._args[-3:], ns.ctypes.data)
        return [(s, float(t) / calls) for s, t in zip(self._steps, ns)]

    def use_cpus(self, cpus: list[int]) -> str:
        """Run the plan's large steps on a team (cpu/team.py): the calling thread and one worker
        thread pinned to each of ``cpus``, started now and woken once per run. [] goes back to
        one thread. What it did, in words."""
        self.close()
        start = getattr(self._lib, "nnos_team_start", None)
        if not cpus:
            return "1 CPU"
        if start is None:
            return "1 CPU (no step of this plan is large enough to split)"
        cpus = list(cpus)[:MAX_THREADS - 1]
        team = aligned_zeros(self._lib.nnos_team_bytes())
        start.restype, start.argtypes = ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
        ids = (ctypes.c_int * len(cpus))(*cpus)
        rc = start(team.ctypes.data, len(cpus) + 1, ctypes.addressof(ids))
        if rc:
            raise BackendError(f"could not start {len(cpus)} worker threads for the plan: {os.strerror(rc)}")
        stop = self._lib.nnos_team_stop
        stop.restype, stop.argtypes = None, (ctypes.c_void_p,)
        fn = self._lib.nnos_run_team
        fn.restype, fn.argtypes = None, (ctypes.c_void_p,) * 4
        # the workers end with the object; the finalizer holds the team's memory until they have
        self._team = weakref.finalize(self, _stop_team, stop, team)
        self._fn, self._args = fn, (team.ctypes.data, *self._args)
        self.facts["cpus"] = [None, *cpus]
        where = ", ".join(str(c) if c >= 0 else "any" for c in cpus)
        return f"{len(cpus) + 1} CPUs (workers on CPU {where})"

    def close(self) -> None:
        """The worker threads, if any, stop and are joined; the plan runs on one thread again."""
        team = getattr(self, "_team", None)
        if team is not None and team.alive:
            team()
            self._fn, self._args = self._lib.nnos_run, self._args[1:]
        self._team = None
        self.facts.pop("cpus", None)


def _generated(plan, profile: bool = False) -> tuple:
    """(object, facts, vector width, workspace bytes, w[] table): the plan's C generated, and
    its object compiled or found in a cache (``profile``: with nnos_profile, cpu/profile.py;
    the steps it times in facts' "profiled_steps")."""
    src, prog = source_and_program(plan)
    steps = None
    if profile:                                  # a diagnostic build: off the loop's way to its first tick
        from .cpu.profile import profiled
        src, steps = profiled(src)
    lib, facts = build(src)
    facts = dict(facts, source_lines=src.count("\n"),
                 **({"profiled_steps": steps, "absorbed_steps": prog.absorbed} if profile else {}))
    return lib, facts, prog.vw, prog.workspace, prog.consts


def _recorded(plan) -> tuple | None:
    """The same from a prebuilt object's record (cpu/record.py), without generating the C; None
    when there is no usable one."""
    name, _ = target()
    vw = width()
    found = record.find(plan, name, vw)
    if found is None:
        return None
    rec, path, consts = found
    key = rec["facts"]["key"]
    if not carries(path, key):
        return None
    facts = dict(rec["facts"], object=path, cached=True, prebuilt=True, program="recorded with the object")
    return load(path, key), facts, vw, rec["workspace"], consts


def _stop_team(stop, team) -> None:
    stop(team.ctypes.data)


def available() -> str | None:
    return None if find_compiler() else "no C compiler (gcc, cc or clang)"


def covers(plan) -> str | None:
    """Why the generator cannot write this plan's C (generation only: no compile), or None."""
    from .cpu.codegen import generate
    try:
        generate(plan, 4)
    except Unsupported as e:
        return str(e)
    return None


def _mark(exe: CpuExecutable) -> str | None:
    """Where "this object ran these weights right" is remembered, for the image's own objects."""
    if not exe.facts.get("prebuilt"):
        return None
    weights = sha256(size=sum(c.nbytes for c in exe._consts))
    for c in exe._consts:
        weights.update(memoryview(c).cast("B"))
    return verification_mark(exe.facts["key"], weights.hexdigest())


def verified_before(exe: CpuExecutable) -> str | None:
    """When the image's own object (read-only, its key checked in its bytes) was verified with
    these weights before, from this root slot, say so: it is not verified again."""
    mark = _mark(exe)
    return f"once on {root_slot()} (remembered)" if mark and os.path.exists(mark) else None


def remember_verified(exe: CpuExecutable) -> None:
    mark = _mark(exe)
    if mark is None:
        return
    try:
        os.makedirs(os.path.dirname(mark), exist_ok=True)
        with open(mark, "a"):
            pass
    except OSError:
        pass                                            # not remembered: verified again next time


def hardware() -> dict:
    """What could change auto's choice while the slot stays: the GPUs' device nodes, and the flag
    that lets auto measure a Vulkan device that is the CPU itself."""
    def names(folder: str, prefix: str = "") -> list[str]:
        try:
            return sorted(n for n in os.listdir(folder) if n.startswith(prefix))
        except OSError:
            return []
    return {"dri": names("/dev/dri"), "nvidia": names("/dev", "nvidia"), "vulkan_cpu": flags.VULKAN_CPU.get()}


def remembered_choice(exe: CpuExecutable) -> dict | None:
    """auto's choice for the image's own object, measured once on this slot with this hardware
    (remember_choice), or None: measure again."""
    mark = _mark(exe)
    if mark is None:
        return None
    try:
        with open(mark + ".auto.json") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    choice = rec.get("choice") if isinstance(rec, dict) else None
    ok = rec.get("hardware") == hardware() and isinstance(choice, dict) and isinstance(choice.get("backend"), str)
    return choice if ok else None


def remember_choice(exe: CpuExecutable, choice: dict) -> None:
    """Kept beside the mark that says the object was verified (only then): a boot's first tick
    then waits for neither the other backends' probes nor the measurement."""
    mark = _mark(exe)
    if mark is None or not os.path.exists(mark):
        return
    try:
        atomic_write(mark + ".auto.json", json.dumps({"hardware": hardware(), "choice": choice}).encode())
    except (OSError, TypeError, ValueError):
        pass                                            # not remembered: measured again next time


def prepare(plan) -> CpuExecutable:
    try:
        return CpuExecutable(plan)
    except (Unsupported, ToolchainError) as e:
        raise BackendError(f"cpu backend: {e}") from e
