"""Backends bind a whole plan and return an Executable (base.py): write inputs, call run(),
read outputs. Each is one module ``ops_<name>.py`` here, found by its name.

``prepare(plan, "auto")`` builds every backend in ``AUTO`` that can run the plan here, each
verified, and measures them: the fastest runs it (choose.py; ``exe.choice`` says every
candidate's p50/p99 and why the winner won). A backend that cannot run a plan here (no device,
no compiler, an op without a generated kernel, a compile error, an unwritable cache; a Vulkan
device that is the CPU itself) is passed over with its reason, never an error — unless it was
asked for by name. A compiled backend is verified against the numpy reference before it is
returned (verify.py).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

from ..errors import BackendError
from ..plan.plan import use_backends
from .base import Executable  # noqa: F401 - the interface, for type hints elsewhere
from .choose import fastest
from .verify import against_reference

AUTO = ("cuda", "vulkan", "cpu", "numpy")          # what auto measures
# found by name: ops_<name>.py (a listing, not pkgutil: its import is ≈ 20 ms of an emulated boot)
NAMES = ("auto",) + tuple(sorted(f[4:-3] for f in os.listdir(__path__[0]) if f.startswith("ops_") and f.endswith(".py")))


def module(name: str) -> ModuleType:
    if name not in NAMES or name == "auto":
        raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.ops_{name}")


def _build(plan, name: str) -> Executable:
    mod = module(name)
    exe = mod.prepare(plan)
    if name in ("numpy", "null"):           # the reference itself; the one that computes nothing
        return exe
    # a backend checks itself before it runs anything — once per object for one built with the
    # image (read-only, its key checked in its bytes), remembered in the data partition
    earlier = getattr(mod, "verified_before", None)
    when = earlier(exe) if earlier else None
    if when:
        exe.facts["verified"] = when
        return exe
    against_reference(plan, exe)
    if hasattr(mod, "remember_verified"):
        mod.remember_verified(exe)
    return exe


def prepare(plan, backend: str = "numpy") -> Executable:
    if backend != "auto":
        exe = _build(plan, backend)
        exe.choice = {"backend": exe.backend, "asked": backend, "passed_over": {}}
        return exe
    built, passed = {}, {}
    again = _recall(plan, built, passed)
    if again is not None:
        return again
    for name in AUTO:
        if name in built or name in passed:
            continue
        left_out = getattr(module(name), "left_out_of_auto", lambda: None)()
        if left_out:
            passed[name] = left_out
            continue
        try:
            built[name] = _build(plan, name)
        except BackendError as e:
            passed[name] = str(e)
    exe = fastest(built, passed, plan)
    if "cpu" in built:
        module("cpu").remember_choice(built["cpu"], exe.choice)
    return exe


def _recall(plan, built: dict, passed: dict) -> Executable | None:
    """For the image's own cpu object, verified on this slot: auto's choice as measured there once
    (ops_cpu.remembered_choice), that backend built again without probing or measuring the
    others — a boot's first tick waits for neither (a Vulkan probe alone is seconds under
    emulation). None: measure."""
    cpu = module("cpu")
    try:                           # (without a compiler: its reason, unless the object's record needs none)
        built["cpu"] = _build(plan, "cpu")
    except BackendError as e:
        passed["cpu"] = str(e)
        return None
    choice = cpu.remembered_choice(built["cpu"])
    if choice is None or choice["backend"] not in AUTO:     # (never one auto would not choose: null)
        return None
    name = choice["backend"]
    try:
        exe = built["cpu"] if name == "cpu" else _build(plan, name)
    except BackendError:
        return None                                     # gone since (a driver): measured again
    exe.choice = {**choice, "why": f"{choice.get('why', '')}; measured once on this slot, remembered"}
    return exe


def available() -> dict[str, str | None]:
    """Each backend auto may choose: None when it can run here, else why not (before seeing a plan)."""
    return {name: module(name).available() for name in AUTO}


def coverage(plan) -> dict:
    """Which backends auto would measure for ``plan`` here, and why not the others (no compile:
    a generator decides whether it covers every step)."""
    out = {}
    for name in AUTO:
        mod = module(name)
        why = mod.available() or getattr(mod, "left_out_of_auto", lambda: None)() or mod.covers(plan)
        out[name] = {"runs_here": why is None, "why_not": why}
    out["candidates"] = [n for n in AUTO if out[n]["runs_here"]]
    out["auto"] = "the fastest of " + ", ".join(out["candidates"]) + ", measured when the plan is bound"
    return out


use_backends(prepare)          # every Plan binds through these from now on
