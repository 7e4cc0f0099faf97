"""Backends bind a whole plan and return an Executable: write inputs, call run(), read outputs.

The interface assumes nothing about how a backend runs the steps: numpy binds them one by
one (the reference), cpu runs the whole plan as one generated native function.

``prepare(plan, "auto")`` prefers cuda, then cpu, then numpy, and says why it chose what it
chose (``exe.choice``): a backend that cannot run a plan here (no compiler, an op without a
generated kernel, a compile error, an unwritable cache) is passed over with its reason, never
an error — unless it was asked for by name.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import BackendError
from ..plan.plan import use_backends

NAMES = ("auto", "cuda", "cpu", "numpy")


class Executable(Protocol):
    backend: str
    inputs: dict[str, np.ndarray]    # write the next call's inputs here
    outputs: dict[str, np.ndarray]   # read after run(); overwritten by the next run()

    def run(self) -> None: ...


def _numpy(plan):
    from .numpy_backend import prepare as prep
    return prep(plan)


def _cpu(plan):
    from .cpu import CompilerError, Unsupported, prepare as prep
    try:
        exe = prep(plan)
        verify(plan, exe)
        return exe
    except Unsupported as e:
        raise BackendError(f"cpu backend: {e}") from e
    except CompilerError as e:
        raise BackendError(f"cpu backend: {e}") from e


def _cuda(plan):
    raise BackendError("cuda backend: not in this build (no CUDA device or CuPy here)")


BUILDERS = {"cuda": _cuda, "cpu": _cpu, "numpy": _numpy}


def prepare(plan, backend: str = "numpy") -> Executable:
    if backend not in NAMES:
        raise BackendError(f"unknown backend {backend!r}; expected one of {', '.join(NAMES)}")
    if backend != "auto":
        exe = BUILDERS[backend](plan)
        exe.choice = {"backend": exe.backend, "asked": backend, "passed_over": {}}
        return exe
    passed = {}
    for name in ("cuda", "cpu", "numpy"):
        try:
            exe = BUILDERS[name](plan)
        except BackendError as e:
            passed[name] = str(e)
            continue
        exe.choice = {"backend": exe.backend, "asked": "auto", "passed_over": passed}
        return exe
    raise BackendError(f"no backend can run this plan: {passed}")


def verify(plan, exe, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """``exe`` against the numpy reference on the compiler's sample inputs (BackendError when
    an output differs): a compiled backend checks itself before it runs anything."""
    if exe.backend == "numpy":
        return
    from ..plan.sample import sample_inputs
    ref = _numpy(plan)
    for name, v in sample_inputs(plan, seed=7).items():
        np.copyto(ref.inputs[name], v)
        np.copyto(exe.inputs[name], v)
    ref.run()
    exe.run()
    for name, want in ref.outputs.items():
        got = exe.outputs[name]
        if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            err = float(np.max(np.abs(got.astype(np.float64) - want)))
            raise BackendError(f"{exe.backend} backend: output {name!r} differs from the reference by up to {err:.3g}")


def available() -> dict[str, str | None]:
    """Each backend: None when it can run here, else why not (before seeing a plan)."""
    from .cpu.toolchain import find_compiler
    return {"cuda": "not in this build", "cpu": None if find_compiler() else "no C compiler (gcc, cc or clang)",
            "numpy": None}


use_backends(prepare)          # every Plan binds through these from now on
