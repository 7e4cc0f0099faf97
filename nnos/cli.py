"""The `nnos` command: compile, inspect, run and benchmark plans."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from nnos_hardware.errors import HardwareError

from . import backends  # every plan the CLI loads binds through them
from .errors import NnosError


def _dims(items):
    out = {}
    for item in items or []:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise NnosError(f"--dim expects NAME=N, got {item!r}")
        out[name] = int(value)
    return out


PRECISION = {"auto": "fp32-compute", "fp32": "fp32", "fp16": "model"}


def cmd_compile(a):
    from .compiler import compile
    images = {}
    if a.board:                                # a board's in-plan image pre-processing goes into the plan
        from nnos_hardware.board import load_board
        images = load_board(a.board).plan_images()
    plan = compile(a.model, batch=a.batch, dims=_dims(a.dim), check=not a.no_check, images=images,
                   precision=PRECISION[a.precision])
    if a.kernels:                              # generated here, kept in the plan: the device needs no compiler
        from .backends.vulkan.kernels import embed
        n = embed(plan)
        print(f"kernels: {n} SPIR-V modules kept in the plan "
              f"({sum(map(len, plan.kernels['vulkan'].values())):,} B)")
    plan.save(a.output)
    say_backend(plan, a.backend)
    m = plan.memory
    print(f"compiled {a.model} -> {a.output}: {plan.meta['steps']} steps, "
          f"{plan.meta['cost']['flops']:,} FLOPs, arena {m.arena_bytes:,} B "
          f"(naive {m.naive_bytes:,}, lower bound {m.lower_bound_bytes:,}), "
          f"{plan.compile_seconds * 1000:.0f} ms")
    for fixed in plan.meta["source"].get("fixed_dims", []):
        print(f"fixed: {fixed}", file=sys.stderr)
    for w in plan.meta["warnings"]:
        print(f"WARNING: {w}", file=sys.stderr)


def say_backend(plan, backend: str) -> dict:
    """Bind ``plan`` on ``backend`` (compiling and self-checking a compiled one) and say which
    backend runs it here and why the others do not."""
    from .backends import prepare
    from .backends.report import lines
    exe = prepare(plan, backend)
    print("\n".join(lines(exe)))
    return exe.choice


def inspect_report(plan) -> dict:
    from .backends import coverage
    m = plan.memory
    return {
        "meta": plan.meta,
        "memory": {k: getattr(m, k) for k in ("arena_bytes", "naive_bytes", "lower_bound_bytes", "workspace_bytes")},
        "backends": coverage(plan),
        "kernels": {b: {"modules": len(k), "bytes": sum(map(len, k.values()))} for b, k in plan.kernels.items()},
    }


def cmd_inspect(a):
    from .plan import load
    plan = load(a.plan)
    rep = inspect_report(plan)
    if a.json:
        json.dump(rep, sys.stdout, indent=1)
        print()
        return
    meta, mem = plan.meta, rep["memory"]
    src = meta["source"]
    print(f"plan       {a.plan}  (nnos {meta['nnos_version']}, plan format {meta['plan_format']})")
    print(f"source     sha256 {src['source_sha256'][:16]}…  opset {src['opset']}  batch {src['batch']}")
    for kind in ("inputs", "outputs"):
        for t in meta[kind]:
            print(f"{kind[:-1]:<10} {t['name']}: {t['dtype']}{t['shape']}")
    print(f"{'step':<28} {'ops':<28} {'FLOPs':>14} {'bytes':>12}")
    for s in meta["cost"]["steps"]:
        print(f"{s['step'][:28]:<28} {s['ops'][:28]:<28} {s['flops']:>14,} {s['bytes']:>12,}")
    print(f"total      {meta['cost']['flops']:,} FLOPs, {meta['cost']['bytes']:,} bytes moved, "
          f"weights {meta['cost']['weight_bytes']:,} B")
    print(f"arena      {mem['arena_bytes']:,} B   naive sum {mem['naive_bytes']:,} B   "
          f"lower bound {mem['lower_bound_bytes']:,} B   (+ {mem['workspace_bytes']:,} B kept scratch)")
    print("ops        " + ", ".join(f"{k}×{v}" for k, v in meta["ops"].items()))
    for b, k in rep["kernels"].items():
        print(f"kernels    {b}: {k['modules']} modules generated at compile time ({k['bytes']:,} B)")
    be = rep["backends"]
    print(f"backends   auto measures {', '.join(be['candidates'])} when the plan is bound" +
          "".join(f"; not {n}: {be[n]['why_not']}" for n in ("cuda", "vulkan", "cpu") if not be[n]["runs_here"]))
    for w in meta["warnings"]:
        print(f"WARNING    {w}")


def cmd_run(a):
    from .plan import load
    plan = load(a.plan)
    feeds = {}
    for item in a.inputs or []:
        name, _, path = item.partition("=")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise NnosError(f"--in {item}: cannot read a .npy array: {e}") from e
    out = plan(feeds)
    os.makedirs(a.out, exist_ok=True)
    for name, value in out.items():
        path = os.path.join(a.out, f"{name}.npy")
        np.save(path, value)
        print(f"{name}: {value.dtype}{list(value.shape)} -> {path}")


def cmd_bench(a):
    from .plan import load
    from .backends.bench import bench, step_times
    if a.steps:
        rows = step_times(load(a.plan), a.iters)
        if a.json:
            print(json.dumps(rows))
            return
        print(f"{a.plan}: each step on the cpu backend, one thread, mean of {a.iters} calls; slowest first")
        for r in rows:
            shape = "×".join(str(d) for d in r["shape"])
            print(f"  {r['us']:9.2f} µs {100 * r['share']:5.1f} %  step {r['step']:<4} {r['op']:<28} {shape:<16} {r['name']}")
        return
    res = bench(load(a.plan), a.iters, backend=a.backend)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{a.plan}: p50 {res['p50_us']:.2f} µs  p99 {res['p99_us']:.2f} µs  max {res['max_us']:.1f} µs "
              f"({res['iters']} calls, {res['backend']})")


def cmd_gpu_check(a):
    from .backends.vulkan.check import run_check, vectors
    from .compiler import compile
    r = run_check({path: compile(path) for path in vectors()}, a.calls)
    if a.json:
        print(json.dumps(r))
    elif not r["available"]:
        print(f"no GPU through Vulkan: {r['why']}")
    else:
        lim = r["limits"]
        print(f"{r['device']} (Vulkan {r['api']}, driver {r['driver_version']:#x}): workgroups ≤ "
              f"{lim['max_workgroup_invocations']} invocations, {lim['max_storage_buffers_per_stage']} storage buffers "
              f"a stage, buffers ≤ {lim['max_storage_buffer_range']} bytes, shared memory {lim['max_shared_memory']} bytes")
        for v in r["vectors"]:
            print(f"  {v['model']}: " + (f"ok (max difference from numpy {v['max_abs_diff']:.2g})" if v["ok"]
                                          else f"FAILED: {v.get('why') or v['max_abs_diff']}"))
        if "replay_us" in r:
            x, f = r["replay_us"], r["floor_us"]
            print(f"  {r['calls']} replays: p50 {x['p50']} µs, p99 {x['p99']} µs, max {x['max']} µs; "
                  f"the floor (submit + fence): p50 {f['p50']} µs, p99 {f['p99']} µs")
    if r["available"] and not all(v["ok"] for v in r["vectors"]):
        raise NnosError("a test vector failed on this GPU")


def cmd_up(a):
    from .supervisor.up import DEFAULT_BOARD, up
    up(a.board or DEFAULT_BOARD, a.data, a.duration, not a.no_status, plan=a.plan,
       default_board=a.default_board, init=a.init)


def cmd_keygen(a):
    from .signing import keygen
    print(f"private key {a.out} (mode 0600), public key {keygen(a.out)}: copy the .pub into DATA/trusted_keys/")


def cmd_sign(a):
    from .signing import sign
    with open(a.file, "rb") as f:
        sig = sign(f.read(), a.key)
    with open(a.file + ".sig", "w") as f:
        f.write(sig + "\n")
    print(f"{a.file}.sig: send it as the X-Nnos-Signature header (nnos ctl push does)")


def cmd_board(a):
    """`nnos board check FILE [--model M]`: validate a board (and its binding to a model, an
    .onnx or a plan) without starting anything."""
    from nnos_hardware.board import load_board
    board = load_board(a.file)
    model = a.model or board.model
    if model:
        from .plan import load
        if model.endswith(".onnx"):
            from .compiler import compile
            plan = compile(model, check=False, images=board.plan_images())
        else:
            plan = load(model)
        board.check_plan(plan)
    chans = sum(len(d.channels) for d in board.devices)
    print(f"{a.file}: board {board.name!r} is valid: {board.rate_hz:g} Hz, {len(board.devices)} device(s), "
          f"{chans} channel(s)" + (f"; binds {os.path.basename(model)}'s inputs and outputs" if model else ""))


def cmd_flags(a):
    from .flags import REGISTRY
    for f in REGISTRY.values():
        print(f"{f.name:<22} default {f.default!r:<8} now {f.get()!r:<8} {f.help}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnos", description="Compile ONNX networks into static plans and run them.")
    sub = p.add_subparsers(dest="cmd", required=True)
    plan_parsers(sub)
    u = sub.add_parser("up", help="start the supervisor: the loop and everything around it")
    from .supervisor.up import arguments as up_arguments
    up_arguments(u)
    u.set_defaults(fn=cmd_up)
    k = sub.add_parser("keygen", help="make an Ed25519 key pair for signing models")
    k.add_argument("--out", required=True)
    k.set_defaults(fn=cmd_keygen)
    sg = sub.add_parser("sign", help="sign a model file (writes FILE.sig)")
    sg.add_argument("file")
    sg.add_argument("--key", required=True)
    sg.set_defaults(fn=cmd_sign)
    from .ctl import add_parser as add_ctl
    add_ctl(sub)
    b = sub.add_parser("board", help="check a board config (and its binding to a model) without starting anything")
    b.add_argument("action", choices=["check"])
    b.add_argument("file")
    b.add_argument("--model", help="an .onnx or plan to check the bindings against (default: the board's model)")
    b.set_defaults(fn=cmd_board)
    from .cli_robot import add_parsers as add_robot
    add_robot(sub)
    g = sub.add_parser("gpu-check", help="the Vulkan device: driver, limits, test vectors, replay timing")
    g.add_argument("--calls", type=int, default=10_000)
    g.add_argument("--json", action="store_true")
    g.set_defaults(fn=cmd_gpu_check)
    f = sub.add_parser("flags", help="list the environment flags nnos reads")
    f.set_defaults(fn=cmd_flags)
    return p


def plan_parsers(sub) -> None:
    """The commands on models and plans: compile, inspect, run, bench."""
    c = sub.add_parser("compile", help="ONNX model -> plan file")
    c.add_argument("model")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--batch", type=int, default=1, help="value of the symbolic batch dimension (default 1)")
    c.add_argument("--dim", action="append", metavar="NAME=N", help="fix another symbolic dimension")
    c.add_argument("--no-check", action="store_true", help="skip the compiler's self-check")
    c.add_argument("--board", help="compile in this board's image pre-processing (image = {…, in_plan = true})")
    c.add_argument("--precision", choices=sorted(PRECISION), default="auto",
                   help="a float16 model: auto computes in float32 inside, float16 at its inputs and outputs; "
                        "fp32 takes and gives float32 too; fp16 computes as the model says (slow on CPUs)")
    c.add_argument("--backend", default="auto", choices=backends.NAMES,
                   help="build and self-check this backend here (auto: the fastest measured here)")
    c.add_argument("--kernels", choices=["vulkan"],
                   help="also compile the vulkan backend's shaders now and keep the SPIR-V in the plan")
    c.set_defaults(fn=cmd_compile)
    i = sub.add_parser("inspect", help="show a plan's steps, cost and memory")
    i.add_argument("plan")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)
    r = sub.add_parser("run", help="run a plan on .npy inputs")
    r.add_argument("plan")
    r.add_argument("--in", dest="inputs", action="append", metavar="NAME=FILE.npy")
    r.add_argument("--out", default=".", help="directory for NAME.npy outputs")
    r.set_defaults(fn=cmd_run)
    b = sub.add_parser("bench", help="time a plan's calls")
    b.add_argument("plan")
    b.add_argument("--iters", type=int, default=2000)
    b.add_argument("--backend", default="auto", choices=backends.NAMES)
    b.add_argument("--json", action="store_true")
    b.add_argument("--steps", action="store_true", help="each step's time on the cpu backend (one thread), slowest first")
    b.set_defaults(fn=cmd_bench)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except (NnosError, HardwareError) as e:         # a user's error: one line (a board's names FILE:LINE)
        print(f"nnos {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:                          # `nnos ctl ... | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
