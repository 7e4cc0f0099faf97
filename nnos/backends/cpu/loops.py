"""Strided loop nests: the one shape every generic kernel takes.

An operand is a C pointer expression with an element stride per output dimension (0 where it
is broadcast). ``nest`` drops unit dimensions, merges dimensions that are contiguous for every
operand, and emits plain ``for`` loops with constant bounds and strides — loops gcc unrolls and
vectorizes by itself where the innermost strides are 0 or 1.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, step = [], 1
    for s in reversed(shape):
        out.append(step)
        step *= int(s)
    return tuple(reversed(out))


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """Element strides of a C-contiguous ``shape`` read at every index of ``out_shape``
    (numpy's broadcasting: dimensions aligned on the right, size-1 dimensions repeat)."""
    shape, out_shape = tuple(shape), tuple(out_shape)
    pad = len(out_shape) - len(shape)
    own = contiguous_strides(shape)
    strides = []
    for d in range(len(out_shape)):
        i = d - pad
        strides.append(0 if i < 0 or shape[i] == 1 else own[i])
    return tuple(strides)


def merged_dims(shape, strides_list) -> list[tuple[int, list[int]]]:
    """The loop dimensions of ``shape`` (size, each operand's stride): size-1 ones dropped, and a
    dimension merged into the one before where every operand steps through both as one."""
    dims = [(int(n), [s[d] for s in strides_list]) for d, n in enumerate(shape) if int(n) != 1]
    merged: list[tuple[int, list[int]]] = []
    for n, st in dims:
        if merged:
            pn, pst = merged[-1]
            if all(p == s * n for p, s in zip(pst, st)):
                merged[-1] = (pn * n, st)
                continue
        merged.append((n, st))
    return merged


def nest(shape: Sequence[int], strides: Sequence[Sequence[int]], body: Callable[[list[str]], str],
         var: str = "i") -> str:
    """Loops over ``shape``; ``body`` receives one index expression per operand (in the order
    of ``strides``) and returns the C statements of one element."""
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return "/* empty */"
    dims = merged_dims(shape, strides)
    idx = []
    for k in range(len(strides)):
        terms = [f"{var}{d} * {st[k]}" if st[k] != 1 else f"{var}{d}" for d, (_, st) in enumerate(dims) if st[k]]
        idx.append(" + ".join(terms) if terms else "0")
    lines, pad = [], ""
    for d, (n, _) in enumerate(dims):
        lines.append(f"{pad}for (long {var}{d} = 0; {var}{d} < {n}; {var}{d}++)")
        pad += "    "
    inner = body(idx)
    if not dims:
        return "{ " + inner + " }"
    return "\n".join(lines) + " {\n" + "\n".join(pad + line for line in inner.splitlines()) + "\n" + pad[:-4] + "}"


def row_major(var: str, sizes: Sequence[int]) -> str:
    """The row-major index of the counters (var0, var1, ...) within ``sizes``."""
    expr = ""
    for d, s in enumerate(sizes):
        expr = f"{var}{d}" if d == 0 else f"({expr}) * {s} + {var}{d}"
    return expr or "0"


def counters(var: str, sizes: Sequence[int], pad: str = "") -> list[str]:
    """Nested ``for`` headers over ``sizes`` with counters var0, var1, ... (the caller opens
    the block that follows them)."""
    return [f"{pad}for (long {var}{d} = 0; {var}{d} < {s}; {var}{d}++)" for d, s in enumerate(sizes)]


def window_taps(kernel, strides, dil, begin, insz) -> tuple[list[str], str]:
    """Input positions p_d = o_d·stride − begin + k_d·dilation and when they fall outside the
    input: the window of a convolution or a pooling."""
    taps = [f"long p{d} = o{d} * {strides[d]} - {begin[d]} + k{d} * {dil[d]};" for d in range(len(kernel))]
    return taps, " || ".join(f"p{d} < 0 || p{d} >= {insz[d]}" for d in range(len(kernel)))
