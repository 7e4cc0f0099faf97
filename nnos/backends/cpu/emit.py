"""What every emitter shares: the refusal it raises and how it indents a block of C."""
from __future__ import annotations


class Unsupported(Exception):
    """This plan (a step of it) has no generated form yet."""


def indent(code: str, n: int = 8) -> str:
    return "\n".join((" " * n + line) if line.strip() else line for line in code.strip("\n").splitlines())
