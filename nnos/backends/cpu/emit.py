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


def store_transposed(values: list[str], vw: int, row, nj: str | None = None) -> list[str]:
    """C that stores ``values`` (vectors: pixel i of a row, its lanes the channels of a block) as
    runs of pixels channel by channel: ``row(j)`` is where channel j's run starts. VW vectors at a
    time are transposed in registers (prelude's vtranspose) and each channel's run stored whole;
    ``nj``: a C expression for how many of the block's channels exist (None: all of them)."""
    lines = []
    for i0 in range(0, len(values), vw):
        chunk = values[i0:i0 + vw]
        lines.append(f"{{ vf t[{vw}] = {{{', '.join(chunk)}}}; vtranspose(t);")
        for j in range(vw):
            store = f"memcpy({row(j)} + {i0}, &t[{j}], {len(chunk) * 4});"
            lines.append(f"  {store}" if nj is None else f"  if ({j} < {nj}) {store}")
        lines.append("}")
    return lines
