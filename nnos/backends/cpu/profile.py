"""Each step's time on the cpu backend (`nnos bench --steps`): the plan's generated C with one
more entry point, ``nnos_profile``, which runs the steps in order on one thread, as ``nnos_run``
does, and adds each step's interval (CLOCK_MONOTONIC) to a counter of its own. A diagnostic
build: its own object (the source differs), never the one the loop runs."""
from __future__ import annotations

import re

STEP = re.compile(r"^static __attribute__\(\(noipa\)\) void nnos_step_(\d+)\(", re.M)


def profiled(source: str) -> tuple[str, list[int]]:
    """``source`` with ``nnos_profile(arena, w, ws, long long *ns)`` appended (after
    ``nnos_run``: in the last translation unit, which sees every step), and the plan's step
    indices in the order it runs them (ns[k] is the k-th's)."""
    steps = [int(m.group(1)) for m in STEP.finditer(source)]
    args = "arena, w, ws, 0, 1, 0" if "void nnos_body(" in source else "arena, w, ws"   # a team's steps: thread 0 of 1
    lines = ["#include <time.h>",
             "static long long nnos_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); "
             "return t.tv_sec * 1000000000LL + t.tv_nsec; }",
             "void nnos_profile(char *restrict arena, void *const *restrict w, char *restrict ws, long long *ns) {",
             "    long long t = nnos_now(), u;"]
    lines += [f"    nnos_step_{s}({args}); u = nnos_now(); ns[{k}] += u - t; t = u;" for k, s in enumerate(steps)]
    return source + "\n".join(lines) + "\n}\n", steps
