"""What every emitter shares: the refusal it raises and how it indents a block of C."""
from __future__ import annotations


class Unsupported(Exception):
    """This plan (a step of it) has no generated form yet."""


def indent(code: str, n: int = 8) -> str:
    return "\n".join((" " * n + line) if line.strip() else line for line in code.strip("\n").splitlines())


def after_split(prog, code: str) -> str:
    """What follows a step's split part (an epilogue over its whole output): after every thread
    is done, on thread 0 alone; unchanged when the step did not split."""
    if not prog.split or not code.strip():
        return code
    return f"        NNOS_SYNC();\n        if (tid == 0) {{\n{code}\n        }}"
