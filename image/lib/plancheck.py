"""The image's default plan, checked against the reference on the image's own Python and numpy.

    python3 plancheck.py reference MODEL.onnx PLAN OUT.npz   (build host: direct evaluation of the
                                                              ONNX graph, node by node)
    python3 plancheck.py check PLAN REF.npz [BACKEND]         (inside the image's root filesystem;
                                                              BACKEND numpy by default, or cpu)
"""
from __future__ import annotations

import sys

import numpy as np


def reference(model: str, plan_path: str, out: str) -> None:
    from nnos.compiler import run_direct, sample_inputs
    from nnos.frontend import import_onnx
    from nnos.passes import infer_types
    from nnos.plan import load
    plan = load(plan_path)
    graph, _ = import_onnx(model, batch=1)
    typed = infer_types(graph)
    arrays = {}
    for seed in range(4):
        feeds = sample_inputs(plan, seed=seed)
        direct = run_direct(typed, feeds)
        arrays.update({f"{seed}/in/{k}": v for k, v in feeds.items()})
        arrays.update({f"{seed}/out/{k}": np.asarray(v) for k, v in direct.items()})
    np.savez(out, **arrays)
    print(f"reference: {len(arrays)} arrays from 4 input sets")


def check(plan_path: str, ref: str, backend: str = "numpy") -> None:
    from nnos.backends import prepare
    from nnos.plan import load
    plan = load(plan_path)
    exe = prepare(plan, backend)
    rtol, atol = (1e-5, 1e-6) if backend == "numpy" else (1e-4, 1e-5)

    def run(feeds):
        for k, v in feeds.items():
            np.copyto(exe.inputs[k], v)
        exe.run()
        return exe.outputs
    data = np.load(ref)
    worst = 0.0
    for seed in sorted({k.split("/")[0] for k in data.files}):
        feeds = {k.split("/", 2)[2]: data[k] for k in data.files if k.startswith(f"{seed}/in/")}
        got = run(feeds)
        for k in data.files:
            if k.startswith(f"{seed}/out/"):
                name, want = k.split("/", 2)[2], data[k]
                if not np.allclose(got[name], want, rtol=rtol, atol=atol):
                    raise SystemExit(f"plan check FAILED: output {name!r} for input set {seed} differs from the "
                                     f"reference (max abs error {np.max(np.abs(got[name] - want)):.3g})")
                worst = max(worst, float(np.max(np.abs(got[name] - want))) if want.size else 0.0)
    facts = getattr(exe, "facts", {})
    where = f", object {facts['object']} ({facts['target']})" if facts else ""
    print(f"plan check in the image ({backend} backend{where}; numpy {np.__version__}): outputs equal the "
          f"reference (max abs error {worst:.2g})")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"reference": reference, "check": check}[cmd](*args)
