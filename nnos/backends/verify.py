"""Is this plan right? One place for the three checks nnos makes, each returning what it
checked (for reports) or raising ``VerifyError`` saying what differed:

- ``compiled(plan, typed)``        the compiler's self-check: the plan against the unoptimized
                                   graph run node by node, then bitwise the same after save/load
- ``against_reference(plan, exe)`` a backend's executable against the numpy reference
- ``finite_outputs(plan)``         the outputs are finite on sample inputs (intake: a model that
                                   would trip failsafe at once is refused)

Which backends can run a plan at all is ``backends.coverage``.
"""
from __future__ import annotations

import numpy as np

from ..errors import BackendError
from ..plan.sample import run_direct, sample_inputs


class VerifyError(BackendError):
    pass


def _differs(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> float | None:
    if np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        return None
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def compiled(plan, typed, rtol: float = 1e-4) -> dict:
    from ..plan.plan import Plan
    feeds = sample_inputs(plan)
    direct = run_direct(typed, feeds)
    got = {k: v.copy() for k, v in plan(feeds).items()}
    for name, ref in direct.items():
        atol = rtol * max(1.0, float(np.max(np.abs(ref)))) if ref.size and ref.dtype.kind == "f" else 0
        err = _differs(got[name], ref, rtol, atol)
        if err is not None:
            raise VerifyError(f"self-check failed: output {name!r} of the plan differs from the direct "
                              f"evaluation by {err:.3g}")
    again = Plan.from_bytes(plan.to_bytes())(feeds)
    for name in got:
        if not np.array_equal(got[name], again[name], equal_nan=True):
            raise VerifyError(f"self-check failed: output {name!r} changed after save and load")
    return {"outputs_checked": len(direct), "rtol": rtol, "round_trip": "bitwise"}


def against_reference(plan, exe, rtol: float = 1e-4, atol: float = 1e-5) -> dict:
    if exe.backend == "numpy":
        return {"reference": True}
    from .ops_numpy import NumpyExecutable
    ref = NumpyExecutable(plan)
    for name, v in sample_inputs(plan, seed=7).items():
        np.copyto(ref.inputs[name], v)
        np.copyto(exe.inputs[name], v)
    ref.run()
    exe.run()
    for name, want in ref.outputs.items():
        err = _differs(exe.outputs[name], want, rtol, atol)
        if err is not None:
            raise VerifyError(f"{exe.backend} backend: output {name!r} differs from the reference by up to {err:.3g}")
    return {"against": "numpy", "outputs_checked": len(ref.outputs), "rtol": rtol, "atol": atol}


def finite_outputs(plan, seed: int = 123) -> dict:
    out = plan(sample_inputs(plan, seed=seed))
    bad = [k for k, v in out.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    if bad:
        raise VerifyError(f"outputs {bad} are not finite on sample inputs: the model would trip failsafe")
    return {"sample_inputs": f"standard normal, seed {seed}", "outputs_finite": True}
