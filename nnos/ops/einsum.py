"""Einsum: the contractions transformers export ("bhqd,bhkd->bhqk", "...ij,...jk->...ik"),
diagonals ("ii->i"), sums and transposes. The equation is normalised once at compile time —
every "..." spelled out as letters of its own, the implicit output made explicit — so the
reference (numpy.einsum into the planned output) and the cpu backend's loop nest read the same
letters; each letter's size is checked across the inputs (1 broadcasts inside an ellipsis)."""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import call, register

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"     # string.ascii_letters


def normalise(node, shapes: list[tuple[int, ...]]) -> tuple[list[str], str, dict[str, int]]:
    """(one letter string per input, the output's letters, each letter's size)."""
    eq = str(node.attrs.get("equation", "")).replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise node.fail(f"equation {eq!r} has {len(terms)} input terms for {len(shapes)} inputs")
    used = set(eq) & set(LETTERS)
    spare = [c for c in LETTERS.upper() + LETTERS if c not in used]
    ell_rank = 0
    for t, s in zip(terms, shapes):
        bare = t.replace("...", "")
        if not set(bare) <= set(LETTERS) or t.count("...") > 1:
            raise node.fail(f"equation {eq!r}: term {t!r} is not letters with at most one '...'")
        if "..." not in t and len(bare) != len(s):
            raise node.fail(f"equation {eq!r}: term {t!r} names {len(bare)} axes of a rank-{len(s)} input")
        ell_rank = max(ell_rank, len(s) - len(bare) if "..." in t else 0)
    ell = "".join(spare[:ell_rank])
    spelled = []
    for t, s in zip(terms, shapes):
        n = len(s) - len(t.replace("...", ""))
        spelled.append(t.replace("...", ell[ell_rank - n:] if n else ""))
    if arrow:
        out = rhs.replace("...", ell)
    else:
        once = [c for c in sorted(set("".join(terms).replace("...", ""))) if "".join(terms).count(c) == 1]
        out = ell + "".join(once)
    sizes: dict[str, int] = {}
    for t, s in zip(spelled, shapes):
        for c, d in zip(t, s):
            have = sizes.get(c)
            if have is None or have == 1:
                sizes[c] = d
            elif d != have and not (d == 1 and c in ell):
                raise node.fail(f"equation {eq!r}: axis {c!r} is {have} in one input and {d} in another")
    missing = [c for c in out if c not in sizes]
    if missing or len(set(out)) != len(out):
        raise node.fail(f"equation {eq!r}: the output names {missing or out!r}, which the inputs do not give once")
    return spelled, out, sizes


def _infer(node, in_types, consts):
    dts = {t.dtype for t in in_types}
    if len(dts) != 1:
        raise node.fail("inputs must share one dtype, got " + ", ".join(str(t) for t in in_types))
    _, out, sizes = normalise(node, [t.shape for t in in_types])
    return [TensorType(in_types[0].dtype, tuple(sizes[c] for c in out))]


def _bind(node, ins, outs, scratch):
    terms, out, _ = normalise(node, [a.shape for a in ins])
    return call(np.einsum, ",".join(terms) + "->" + out, *ins, out=outs[0])


def _flops(node, in_types, out_types):
    _, _, sizes = normalise(node, [t.shape for t in in_types])
    return 2 * int(np.prod(list(sizes.values()), dtype=np.int64))


register("Einsum", _infer, _bind, flops=_flops)
