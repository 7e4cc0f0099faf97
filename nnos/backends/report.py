"""What nnos says about a bound plan's backend: one line for the loop's log and GET /v1/status,
a few lines for `nnos compile`, and the figures (``exe.choice``, ``exe.facts``) behind both."""
from __future__ import annotations


def one_line(exe) -> str:
    """Which backend runs the plan, where a compiled object came from, that it was verified, and
    why the backends before it did not run it."""
    facts, notes = exe.facts, []
    if facts.get("object"):
        origin = ("built with the image" + (" (its program recorded: no C generated)" if facts.get("program") else "")
                  if facts.get("prebuilt") else
                  "from the cache" if facts.get("cached") else "compiled here")
        notes.append(f"{facts.get('target', 'native')} object {origin}, verified against numpy"
                     + (f" {facts['verified']}" if facts.get("verified") else ""))
    if facts.get("spirv"):
        notes.append(f"SPIR-V {facts['spirv']}")
    if len(exe.choice.get("measured") or {}) > 1:
        notes.append("auto: " + exe.choice["why"])
    notes += [f"not {n}: {w.split(': ', 1)[-1]}" for n, w in exe.choice["passed_over"].items() if not _absent(w)]
    return exe.backend + (f" ({'; '.join(notes)})" if notes else "")


def _absent(why: str) -> bool:
    """A backend whose software or device this machine does not have at all: not worth a line."""
    return any(s in why for s in ("CuPy is not usable", "no Vulkan loader", "found no device", "CPU implementation"))


def lines(exe) -> list[str]:
    """`nnos compile`'s account: the backend (and what was asked), how long a compile took,
    and each backend passed over with its reason."""
    choice, facts = exe.choice, exe.facts
    head = f"backend {exe.backend}" + (f" (asked: {choice['asked']})" if choice["asked"] != exe.backend else "")
    if "compile_s" in facts:
        head += (f": compiled in {facts['compile_s']} s{' (cached)' if facts.get('cached') else ''}, "
                 f"{facts['vector_floats']}-float vectors")
    measured = [f"  measured {n}: p50 {f['p50_us']:g} µs, p99 {f['p99_us']:g} µs" for n, f in choice.get("measured", {}).items()]
    return [head] + measured + [f"  not {name}: {why}" for name, why in choice["passed_over"].items()]
