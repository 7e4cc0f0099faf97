"""How much a hot path allocates: the peak of Python's (and numpy's) traced allocations over
many calls after a warm-up."""
from __future__ import annotations

import tracemalloc


def peak_bytes(fn, calls: int, warmup: int = 100) -> int:
    for _ in range(warmup):
        fn()
    tracemalloc.start()
    try:
        for _ in range(calls):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
