"""A large plan's source as translation units gcc compiles side by side, then links.

gcc works on one file with one thread; a plan's steps are independent functions (codegen:
one per step, never inlined across), so they compile as well in two files as in one. The
first units hold steps alone (the prelude and helpers again: all static; not the team's
workers and entry points, which the owner marks in team.RUNTIME fence), their step functions
hidden rather than static so that the last unit — the other steps, nnos_body or nnos_run and
the key — calls them. act_s's build: 2.05 → ≈1.2 s on two CPUs.
"""
from __future__ import annotations

import os
import re

STEP = re.compile(r"^static __attribute__\(\(noipa\)\) void (nnos_step_\d+)\(([^)]*)\) \{$", re.M)
OWNER = re.compile(r"/\* nnos:owner \{ \*/.*?/\* \} nnos:owner \*/", re.S)
HIDDEN = '__attribute__((visibility("hidden"), noipa)) void '
MIN_STEPS = 8                       # fewer: one unit (two gcc start-ups cost more than they save)


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def units(source: str, n: int) -> list[str]:
    """``source`` as at most ``n`` units: [source] when it is small or not a plan's."""
    steps = list(STEP.finditer(source))
    if n < 2 or len(steps) < MIN_STEPS:
        return [source]
    starts = [source.rfind("/* step ", 0, m.start()) for m in steps]
    tails = [i for i in (source.find("\nstatic __attribute__((noipa)) void nnos_body(", starts[-1]),
                         source.find("\nvoid nnos_run(", starts[-1])) if i >= 0]
    if not tails or min(starts) < 0:
        return [source]
    tail = min(tails) + 1
    head, body = source[:starts[0]], source[starts[0]:tail]
    cuts = _cuts([s - starts[0] for s in starts], len(body), n)
    if not cuts:
        return [source]
    groups = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
    moved = [m for m in steps if m.start() - starts[0] < cuts[-1]]
    out = []
    for g in groups[:-1]:
        out.append(OWNER.sub("", head) + STEP.sub(lambda m: f"{HIDDEN}{m.group(1)}({m.group(2)}) {{", g))
    protos = "".join(f"{HIDDEN}{m.group(1)}({m.group(2)});\n" for m in moved)
    out.append(head + protos + groups[-1] + source[tail:])
    return out


def _cuts(offsets: list[int], size: int, n: int) -> list[int]:
    """Step boundaries nearest to n equal parts of the body (by characters: gcc's work)."""
    cuts = []
    for k in range(1, n):
        want = size * k // n
        best = min(offsets[1:], key=lambda o: abs(o - want))
        if best not in cuts and (not cuts or best > cuts[-1]):
            cuts.append(best)
    return cuts
