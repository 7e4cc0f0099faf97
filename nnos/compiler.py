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
from .ir import Graph
from .passes import infer_types, optimize
from . import backends  # noqa: F401 - the self-check runs the plan through them
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


def self_check(plan: Plan, typed: Graph, rtol: float = 1e-4) -> dict:
    feeds = sample_inputs(plan)
    direct = run_direct(typed, feeds)
    got = {k: v.copy() for k, v in plan(feeds).items()}
    for name, ref in direct.items():
        ok = np.allclose(got[name], ref, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(ref)))) if ref.size
                         and ref.dtype.kind == "f" else 0, equal_nan=True)
        if not ok:
            err = np.max(np.abs(got[name].astype(np.float64) - ref.astype(np.float64)))
            raise CompileError(f"self-check failed: output {name!r} of the plan differs from the direct "
                               f"evaluation by {err:.3g}")
    again = Plan.from_bytes(plan.to_bytes())(feeds)
    for name in got:
        if not np.array_equal(got[name], again[name], equal_nan=True):
            raise CompileError(f"self-check failed: output {name!r} changed after save and load")
    return {"outputs_checked": len(direct), "rtol": rtol, "round_trip": "bitwise"}


def compile(path: str, batch: int = 1, dims: dict[str, int] | None = None, check: bool | None = None,
            freeze: dict[str, np.ndarray] | None = None) -> Plan:
    t0 = time.perf_counter()
    graph, info = import_onnx(path, batch=batch, dims=dims, freeze=freeze)
    typed = infer_types(graph)
    graph = schedule(optimize(typed))
    memory = memory_plan(graph)
    problem = arena_problem(int(memory["arena_bytes"]))
    if problem:
        raise CompileError(problem)
    cost = cost_model(graph)
    meta = {
        "nnos_version": __version__, "plan_format": FORMAT_VERSION, "source": info,
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
