"""The sizes a device accepts from a model or a plan file, checked before anything of that
size is allocated. Each check returns what is wrong (or None), so that each layer raises its
own error family with the node or field named."""
from __future__ import annotations

from . import flags

MAX_HEADER_BYTES = 64 << 20           # a plan file's JSON header
MAX_WEIGHT_BYTES = 4 << 30            # all of a plan file's weights


def elements(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def tensor_problem(shape, itemsize: int = 4) -> str | None:
    """Negative dimensions, or more elements than NNOS_MAX_TENSOR_ELEMENTS."""
    if any(int(d) < 0 for d in shape):
        return f"shape {list(shape)} has a negative dimension"
    n, most = elements(shape), flags.MAX_TENSOR_ELEMENTS.get()
    if n > most:
        return (f"shape {list(shape)} has {n} elements ({n * itemsize / 2**20:.0f} MiB); this device accepts at "
                f"most {most} per tensor (NNOS_MAX_TENSOR_ELEMENTS)")
    return None


def arena_problem(nbytes: int) -> str | None:
    most = flags.MAX_ARENA_BYTES.get()
    if nbytes < 0 or nbytes > most:
        return (f"the activation arena would be {nbytes} bytes; this device accepts at most {most} "
                "(NNOS_MAX_ARENA_BYTES)")
    return None
