"""The null backend: binds the plan's inputs and outputs to an arena and runs nothing. It
checks the interface every backend keeps (the interface tests run against it) and measures
what the loop costs without a network."""
from __future__ import annotations

from .base import Arena, Executable


class NullExecutable(Executable):
    backend = "null"

    def __init__(self, plan):
        super().__init__(plan)
        self.arena = Arena(plan)
        self.inputs, self.outputs = self.arena.io()

    def run(self) -> None:
        pass


def available() -> str | None:
    return None


def covers(plan) -> str | None:
    return None


def prepare(plan) -> NullExecutable:
    return NullExecutable(plan)
