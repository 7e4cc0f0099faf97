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


# How close a plan must come to the reference, relative to the largest output magnitude (at
# least 1), by the least precise float type the plan computes in. float32/float64: 1e-4, a few
# hundred float32 roundings apart (fused kernels sum in another order). float16: unit roundoff
# u = 2**-11; the reference rounds every op's result to float16 where a fused kernel keeps the
# chain in float32, so each op between an input and an output may differ by one rounding:
# 1e-2 is 20 u, a dozen rounded layers with margin (a wrong kernel is off by far more).
# "quantized": a graph that quantizes (QuantizeLinear, nnos.QuantizeDequantize) may round a
# value on the other side of a half-way point than the reference when a fused kernel sums in
# another order (or an integer product replaces the model's float one: passes/quant.py) — one
# step of that tensor's scale.
# An 8-bit output's step is 1/127 of its largest magnitude (symmetric) to 1/255 of its range:
# 1/32 allows four such steps reaching an output, and a wrong kernel is off by far more.
TOLERANCE = {"float64": 1e-4, "float32": 1e-4, "float16": 1e-2, "quantized": 1 / 32}


def quantizes(graph) -> bool:
    """Whether the plan rounds to an 8-bit grid (a last-bit difference may move a value a step)."""
    from ..ops.quant import FAKE_QUANT          # here: verifying a plan, not on a boot's way to its first tick
    rounding = ("QuantizeLinear", FAKE_QUANT)
    return any(n.op in rounding or any(e.op in rounding for e in n.epilogue) for n in graph.nodes)


def tolerance(graph) -> tuple[float, str]:
    """(rtol, what it is for) for a graph: "quantized" if it quantizes, else its least precise
    float type's."""
    if quantizes(graph):
        return TOLERANCE["quantized"], "quantized"
    floats = {t.dtype.name for t in graph.types.values() if t.dtype.kind == "f"}
    floats |= {c.dtype.name for c in graph.consts.values() if c.dtype.kind == "f"}
    name = min(floats or {"float32"}, key=lambda n: np.dtype(n).itemsize)
    return TOLERANCE[name], name


def _differs(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> float | None:
    if np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        return None
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def compiled(plan, typed, rtol: float | None = None) -> dict:
    from ..plan.plan import Plan
    rtol, dtype = tolerance(typed) if rtol is None else (rtol, "given")
    feeds = sample_inputs(plan)
    # an upcast plan (--precision fp32) takes float32 where the model takes float16
    direct = run_direct(typed, {k: v.astype(typed.type_of(k).dtype) for k, v in feeds.items()})
    got = {k: v.copy() for k, v in plan(feeds).items()}
    for name, ref in direct.items():
        atol = rtol * max(1.0, float(np.max(np.abs(ref)))) if ref.size and ref.dtype.kind == "f" else 0
        err = _differs(got[name], ref.astype(got[name].dtype), rtol, atol)
        if err is not None:
            raise VerifyError(f"self-check failed: output {name!r} of the plan differs from the direct "
                              f"evaluation by {err:.3g}")
    again = Plan.from_bytes(plan.to_bytes())(feeds)
    for name in got:
        if not np.array_equal(got[name], again[name], equal_nan=True):
            raise VerifyError(f"self-check failed: output {name!r} changed after save and load")
    return {"outputs_checked": len(direct), "rtol": rtol, "rtol_for": dtype, "round_trip": "bitwise"}


def against_reference(plan, exe, rtol: float | None = None, atol: float | None = None) -> dict:
    if exe.backend == "numpy":
        return {"reference": True}
    if rtol is None:
        rtol, _ = tolerance(plan.graph)
        atol = rtol / 10 if atol is None else atol
    atol = 1e-5 if atol is None else atol
    from .ops_numpy import NumpyExecutable
    ref = NumpyExecutable(plan)
    for name, v in sample_inputs(plan, seed=7).items():
        np.copyto(ref.inputs[name], v)
        np.copyto(exe.inputs[name], v)
    ref.run()
    exe.run()
    first = {name: np.array(v) for name, v in exe.outputs.items()}
    for name, want in ref.outputs.items():
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size and want.dtype.kind == "f" else 1.0
        floor = rtol * scale if quantizes(plan.graph) else atol * scale     # an element near 0 beside large ones:
        err = _differs(first[name], want, rtol, max(atol, floor))           # its error is the large ones' rounding
        if err is not None:
            raise VerifyError(f"{exe.backend} backend: output {name!r} differs from the reference by up to {err:.3g}")
    exe.run()                      # replayed on the same inputs, not written again: the same outputs
    for name, was in first.items():
        if not np.array_equal(exe.outputs[name], was, equal_nan=True):
            raise VerifyError(f"{exe.backend} backend: output {name!r} changed when run again on the same inputs "
                              "(a step overwrote an input or kept state)")
    return {"against": "numpy", "outputs_checked": len(ref.outputs), "rtol": rtol, "atol": atol, "replayed": True}


def finite_outputs(plan, seed: int = 123) -> dict:
    out = plan(sample_inputs(plan, seed=seed))
    bad = [k for k, v in out.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    if bad:
        raise VerifyError(f"outputs {bad} are not finite on sample inputs: the model would trip failsafe")
    return {"sample_inputs": f"standard normal, seed {seed}", "outputs_finite": True}
