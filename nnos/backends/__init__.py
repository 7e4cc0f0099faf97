"""Backends bind a whole plan and return an Executable: write inputs, call run(), read outputs.

The interface assumes nothing about how a backend runs the steps: numpy binds them one by
one, a compiled backend may run the whole plan as one native call or one device graph.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import BackendError


class Executable(Protocol):
    backend: str
    inputs: dict[str, np.ndarray]    # write the next call's inputs here
    outputs: dict[str, np.ndarray]   # read after run(); overwritten by the next run()

    def run(self) -> None: ...


def prepare(plan, backend: str = "numpy") -> Executable:
    if backend == "numpy":
        from .numpy_backend import prepare as prep
        return prep(plan)
    raise BackendError(f"unknown backend {backend!r}; available here: numpy")


def available() -> list[str]:
    return ["numpy"]
