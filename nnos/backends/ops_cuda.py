"""The cuda backend's place: one CUDA graph per plan. Not in this build; auto passes it over
with this reason, and asking for it by name says so."""
from __future__ import annotations

from ..errors import BackendError

WHY = "not in this build (no CUDA device or CuPy here)"


def available() -> str | None:
    return WHY


def covers(plan) -> str | None:
    return WHY


def prepare(plan):
    raise BackendError(f"cuda backend: {WHY}")
