"""ONNX file → Plan: import, optimize, schedule, plan memory, measure cost, check itself.

The self-check (on by default, NNOS_SELF_CHECK=0 skips it) runs the unoptimized graph node by
node and the plan on the same random inputs and compares them, then saves and reloads the plan
and requires bitwise-identical outputs.
"""
from __future__ import annotations

import time

import numpy as np

from . import __version__, flags
from .errors import CompileError
from .limits import arena_problem
from .frontend import import_onnx
from .frontend.image import prepend as prepend_image
from .ir import Graph
from .ops import OPS
from .passes import infer_types, optimize
from .passes.precision import apply_precision, has_float16
from .passes.quant import LOWERED
from . import backends  # noqa: F401 - the self-check runs the plan through them
from .backends import verify
from .plan import Plan
from .plan.sample import run_direct, sample_inputs  # noqa: F401 - the pipeline's self-check; re-exported
from .plan.artifact import FORMAT_VERSION
from .schedule import cost_model, memory_plan, schedule


def _warnings(graph: Graph) -> list[str]:
    out = []
    for name, c in graph.consts.items():
        if c.dtype.kind == "f" and not np.isfinite(c).all():
            bad = int((~np.isfinite(c)).sum())
            out.append(f"constant {name!r} holds {bad} NaN/Inf value(s): outputs will not be finite")
    return out


def self_check(plan: Plan, typed: Graph, rtol: float | None = None) -> dict:
    """The plan against the unoptimized graph, and itself after a save and load (verify.compiled)."""
    try:
        return verify.compiled(plan, typed, rtol)
    except verify.VerifyError as e:
        raise CompileError(str(e)) from e


def compile(path: str, batch: int = 1, dims: dict[str, int] | None = None, check: bool | None = None,
            freeze: dict[str, np.ndarray] | None = None, images: dict | None = None,
            precision: str = "fp32-compute") -> Plan:
    """``images``: {input: ((H, W), spec)} — image pre-processing prepended to those inputs
    (a board's in-plan images, Board.plan_images()): the plan takes uint8 [1, H, W, 3] frames.
    ``precision``: where a float16 model is computed (passes/precision.py): "fp32-compute"
    (float16 at its inputs and outputs, float32 inside), "fp32" (float32 throughout), "model"."""
    t0 = time.perf_counter()
    graph, info = import_onnx(path, batch=batch, dims=dims, freeze=freeze, known_ops=set(OPS) | {"Constant"} | set(LOWERED))
    for name, (frame, spec) in (images or {}).items():
        graph = prepend_image(graph, name, frame, spec)
        info = dict(info, image_inputs={**info.get("image_inputs", {}), name: {k: v for k, v in spec.items()
                                                                              if k not in ("in_plan",)}})
    typed = infer_types(graph)
    graph = schedule(optimize(apply_precision(typed, precision)))
    memory = memory_plan(graph)
    problem = arena_problem(memory.arena_bytes)
    if problem:
        raise CompileError(problem)
    cost = cost_model(graph)
    meta = {
        "nnos_version": __version__, "plan_format": FORMAT_VERSION, "source": info,
        **({"precision": precision} if has_float16(typed) else {}),
        "inputs": [{"name": n, **graph.type_of(n).to_json()} for n in graph.inputs],
        "outputs": [{"name": n, **graph.type_of(n).to_json()} for n in graph.outputs],
        "ops": typed.op_counts(), "steps": len(graph.nodes), "cost": cost, "warnings": _warnings(graph),
    }
    plan = Plan(graph, memory, meta)
    if flags.SELF_CHECK.get() if check is None else check:
        meta["self_check"] = self_check(plan, typed)
    # not in meta: the plan's bytes (and so the model's id) depend only on the network, its
    # weights and the compile options, never on when or how fast it was compiled
    plan.compile_seconds = round(time.perf_counter() - t0, 4)
    return plan
