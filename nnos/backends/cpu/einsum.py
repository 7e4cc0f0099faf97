"""Einsum as one loop nest: a loop per output letter, inside it a loop per summed letter, the
product of the inputs' elements accumulated (nnos/ops/einsum.py normalises the equation)."""
from __future__ import annotations

from ...ops.einsum import normalise
from .ctype import compute, storage
from .elementwise import epilogue_pass
from .emit import indent
from .loops import contiguous_strides


def _strides(shape, term: str, sizes: dict) -> dict[str, int]:
    """Element stride per letter (a repeated letter — a diagonal — adds; a broadcast 1 is 0)."""
    out: dict[str, int] = {}
    for c, d, s in zip(term, shape, contiguous_strides(shape)):
        out[c] = out.get(c, 0) + (0 if d == 1 and sizes[c] != 1 else s)
    return out


def _offset(strides: dict[str, int]) -> str:
    return " + ".join(f"i{ord(c)} * {s}" for c, s in strides.items() if s) or "0"


def einsum(prog, node) -> str:
    ins, y = list(node.inputs), node.outputs[0]
    terms, out, sizes = normalise(node, [prog.type(i).shape for i in ins])
    dt = prog.type(y).dtype
    ct, st = compute(dt), storage(dt)
    summed = [c for c in dict.fromkeys("".join(terms)) if c not in out]
    lines = [f"const {storage(prog.type(a).dtype)} *A{k} = {prog.ptr(a)};" for k, a in enumerate(ins)]
    lines.append(f"{st} *Y = {prog.ptr(y)};")
    depth = 0
    for c in out:
        lines.append("    " * depth + f"for (long i{ord(c)} = 0; i{ord(c)} < {sizes[c]}; i{ord(c)}++)")
        depth += 1
    lines.append("    " * depth + f"{{ {ct} acc = 0;")
    for c in summed:
        lines.append("    " * (depth + 1) + f"for (long i{ord(c)} = 0; i{ord(c)} < {sizes[c]}; i{ord(c)}++)")
        depth += 1
    product = " * ".join(f"({ct})A{k}[{_offset(_strides(prog.type(a).shape, t, sizes))}]"
                         for k, (a, t) in enumerate(zip(ins, terms)))
    lines.append("    " * (depth + 1) + f"acc += {product};")
    out_offset = _offset(dict(zip(out, contiguous_strides(tuple(sizes[c] for c in out)))))
    lines.append("    " * (len(out)) + f"  Y[{out_offset}] = ({st})acc; }}")
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)
