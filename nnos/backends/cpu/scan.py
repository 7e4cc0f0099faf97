"""Trilu and CumSum as loops over the plan's arrays (nnos/ops/scan.py defines them)."""
from __future__ import annotations

import numpy as np

from ...ops.scan import cumsum_axis
from .ctype import compute, storage
from .elementwise import epilogue_pass
from .emit import indent


def trilu(prog, node) -> str:
    x, y = node.inputs[0], node.outputs[0]
    shape = prog.type(x).shape
    n, m = shape[-2:]
    k = prog.graph.consts.get(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
    d = int(np.asarray(k).reshape(-1)[0]) if k is not None else 0
    cond = f"c - r >= {d}" if int(node.attrs.get("upper", 1)) else f"c - r <= {d}"
    st = storage(prog.type(y).dtype)
    code = (f"const {st} *X = {prog.ptr(x)}; {st} *Y = {prog.ptr(y)};\n"
            f"for (long b = 0; b < {int(np.prod(shape[:-2], dtype=np.int64))}; b++)\n"
            f"    for (long r = 0; r < {n}; r++)\n"
            f"        for (long c = 0; c < {m}; c++) {{ long i = (b * {n} + r) * {m} + c; "
            f"Y[i] = ({cond}) ? X[i] : ({st})0; }}")
    return indent(code) + "\n" + epilogue_pass(prog, node, y)


def cumsum(prog, node) -> str:
    x, y = node.inputs[0], node.outputs[0]
    xt = prog.type(x)
    shape = xt.shape
    axis = cumsum_axis(node, len(shape), prog.graph.consts[node.inputs[1]])
    outer, n = int(np.prod(shape[:axis], dtype=np.int64)), shape[axis]
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    st, ct = storage(xt.dtype), compute(xt.dtype)
    t = f"{n - 1} - t" if int(node.attrs.get("reverse", 0)) else "t"
    step = ("Y[p] = (%s)acc; acc += X[p];" if int(node.attrs.get("exclusive", 0)) else "acc += X[p]; Y[p] = (%s)acc;") % st
    code = (f"const {st} *X = {prog.ptr(x)}; {st} *Y = {prog.ptr(y)};\n"
            f"for (long o = 0; o < {outer}; o++)\n"
            f"    for (long i = 0; i < {inner}; i++) {{\n"
            f"        {ct} acc = 0;\n"
            f"        for (long t = 0; t < {n}; t++) {{ long p = (o * {n} + ({t})) * {inner} + i; {step} }}\n"
            f"    }}")
    return indent(code) + "\n" + epilogue_pass(prog, node, y)
