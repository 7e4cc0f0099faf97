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


def row_blocks(ow: int, pmax: int, block, even: bool = True) -> list[str]:
    """A row of ``ow`` output pixels in register blocks of at most ``pmax``: the fewest blocks,
    of p pixels and what is left. ``even``: when what is left would fill less than half a block,
    blocks of p and p − 1 instead (32 pixels at most 6 a block: 2 × 6 + 4 × 5, not 5 × 6 + 2,
    whose 2 pixels' accumulators are too few to hide the FMA's latency: a dense convolution's
    windows, AVX2 res5_s −8 %, act_s −4 %). ``block(n)`` is the C (a list of lines) for n pixels from ``ox0``."""
    count = -(-ow // pmax)
    p = -(-ow // count)
    sizes = ((p, ow - count * (p - 1)), (p - 1, count - (ow - count * (p - 1))))   # n blocks of p, the rest p − 1
    if not even or 2 * (ow % p) >= p:                # a last block with half the accumulators or more: kept
        sizes = ((p, ow // p), (ow % p, 1 if ow % p else 0))
    lines, start = [], 0
    for size, n in sizes:
        if n > 1:
            lines.append(f"for (int ox0 = {start}; ox0 < {start + n * size}; ox0 += {size}) {{")
        elif n == 1:
            lines.append(f"{{ const int ox0 = {start};")
        if n:
            lines += ["    " + line for line in block(size)] + ["}"]
        start += n * size
    return lines
