"""MaxPool, AveragePool (any number of spatial dims, pads, strides, dilations, ceil_mode,
count_include_pad) and GlobalAveragePool, any dtype the reference takes.

A window's taps outside the input are skipped: max ignores them, as the reference's -inf
borders do; the average sums what is inside and multiplies by the reference's own table of
1/count per output position (ops/pool.py), so both pad rules come out the same.
"""
from __future__ import annotations

import numpy as np

from .emit import Unsupported, indent
from .ctype import compute, literal, lowest, storage
from .elementwise import epilogue_pass
from .loops import counters, row_major, window_taps


def pool(prog, node) -> str:
    from ...ops.pool import _geometry, _inverse_counts
    x, y = node.inputs[0], node.outputs[0]
    if len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("MaxPool's Indices output")
    xs = prog.type(x).shape
    kernel, strides, dil, begin, end, out, padded = _geometry(node, xs)
    dt = prog.type(x).dtype
    ct, st = compute(dt), storage(dt)
    insz = xs[2:]
    is_max = node.op == "MaxPool"
    nsp, nout = int(np.prod(insz)), int(np.prod(out))
    lines = [f"const {st} *X = {prog.ptr(x)}; {st} *Y = {prog.ptr(y)};"]
    if not is_max:
        inv = _inverse_counts(node, xs, kernel, strides, dil, begin, out, padded, dt).reshape(-1)
        lines.append(f"const {st} *INV = {prog.const(y + '@poolinv', inv, dt)};")
    lines.append(f"for (long nc = 0; nc < {xs[0] * xs[1]}; nc++) {{")
    lines.append(f"    const {st} *xc = X + nc * {nsp}; {st} *yc = Y + nc * {nout};")
    lines += counters("o", out, "    ")
    lines.append("    {")
    lines.append(f"        {ct} m = {lowest(dt) if is_max else literal(0, dt)};")
    lines += counters("k", kernel, "        ")
    lines.append("        {")
    taps, skip = window_taps(kernel, strides, dil, begin, insz)
    lines += ["            " + t for t in taps]
    lines.append(f"            if ({skip}) continue;")
    lines.append(f"            {ct} v = ({ct})xc[{row_major('p', insz)}];")
    lines.append("            " + ("m = (v != v || v > m) ? v : m;" if is_max else "m += v;"))
    lines.append("        }")
    value = "m" if is_max else f"m * ({ct})INV[{row_major('o', out)}]"
    lines.append(f"        yc[{row_major('o', out)}] = ({st})({value});")
    lines += ["    }", "}"]
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


def global_average(prog, node) -> str:
    x, y = node.inputs[0], node.outputs[0]
    xs = prog.type(x).shape
    dt = prog.type(x).dtype
    ct, st = compute(dt), storage(dt)
    n = int(np.prod(xs[2:]))
    inv = literal(1.0 / n, dt)
    if dt == np.float32:       # vector partial sums, then the lanes
        total = [f"    const float *xc = X + nc * {n}; vf acc = vsplat(0.0f); long i = 0;",
                 f"    for (; i + VW <= {n}; i += VW) acc += vload(xc + i);",
                 "    float s = 0.0f; for (int j = 0; j < VW; j++) s += acc[j];",
                 f"    for (; i < {n}; i++) s += xc[i];"]
    else:
        total = [f"    const {st} *xc = X + nc * {n}; {ct} s = 0;",
                 f"    for (long i = 0; i < {n}; i++) s += ({ct})xc[i];"]
    lines = [f"const {st} *X = {prog.ptr(x)}; {st} *Y = {prog.ptr(y)};",
             f"for (long nc = 0; nc < {xs[0] * xs[1]}; nc++) {{", *total,
             f"    Y[nc] = ({st})(s * {inv});", "}"]
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)
