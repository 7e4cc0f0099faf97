"""What nnos says about a bound plan's backend: one line for the loop's log and GET /v1/status,
a few lines for `nnos compile`, and the figures (``exe.choice``, ``exe.facts``) behind both."""
from __future__ import annotations


def one_line(exe) -> str:
    """Which backend runs the plan, where a compiled object came from, that it was verified, and
    why the backends before it did not run it."""
    facts, notes = exe.facts, []
    if facts.get("object"):
        origin = ("built with the image" if facts.get("prebuilt") else
                  "from the cache" if facts.get("cached") else "compiled here")
        notes.append(f"{facts.get('target', 'native')} object {origin}, verified against numpy"
                     + (f" {facts['verified']}" if facts.get("verified") else ""))
    notes += [f"not {n}: {w.split(': ', 1)[-1]}" for n, w in exe.choice["passed_over"].items() if n != "cuda"]
    return exe.backend + (f" ({'; '.join(notes)})" if notes else "")


def lines(exe) -> list[str]:
    """`nnos compile`'s account: the backend (and what was asked), how long a compile took,
    and each backend passed over with its reason."""
    choice, facts = exe.choice, exe.facts
    head = f"backend {exe.backend}" + (f" (asked: {choice['asked']})" if choice["asked"] != exe.backend else "")
    if "compile_s" in facts:
        head += (f": compiled in {facts['compile_s']} s{' (cached)' if facts.get('cached') else ''}, "
                 f"{facts['vector_floats']}-float vectors")
    return [head] + [f"  not {name}: {why}" for name, why in choice["passed_over"].items()]
