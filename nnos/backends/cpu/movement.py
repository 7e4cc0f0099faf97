"""Ops that move data: views the memory plan could not alias, Transpose, Expand, Slice, Concat,
Split, Gather, and the constant producers (Shape, Constant, ConstantOfShape) — any dtype.

Each is a strided copy (loops.nest) whose strides come from the reference's own geometry
(ops/shape.py: the same slice normalisation, the same split sizes), or a memcpy per block.
"""
from __future__ import annotations

import numpy as np

from .emit import indent
from .ctype import literal, storage
from .elementwise import epilogue_pass
from .loops import broadcast_strides, contiguous_strides, merged_dims, nest


RUN = 4      # contiguous elements in both from which the innermost loop is one memcpy


def _copy(prog, out: str, src: str, src_strides, out_base: int = 0, shape=None, out_strides=None) -> str:
    """out[base + index] = src[index under src_strides], over ``shape`` (out's by default). Where
    the innermost dimension is contiguous in both (a transpose that keeps the last axis: a
    head's 8 or 32 values), each run is one memcpy of a constant size — vector moves, not
    element by element (0.9 µs of act_s's 3 × 65 × 32 transposes)."""
    shape = tuple(prog.type(out).shape) if shape is None else tuple(shape)
    out_strides = contiguous_strides(shape) if out_strides is None else tuple(out_strides)
    o = f"({prog.ptr(out)} + {out_base})"
    dims = merged_dims(shape, [out_strides, tuple(src_strides)])
    if dims and dims[-1][1] == [1, 1] and dims[-1][0] >= RUN:
        n, outer = dims[-1][0], dims[:-1]
        return nest([d for d, _ in outer], [[st[0] for _, st in outer], [st[1] for _, st in outer]],
                    lambda idx: f"memcpy({o} + {idx[0]}, {src} + {idx[1]}, {n} * sizeof *{o});")
    tiled = _tiled(prog, dims, o, src, np.dtype(prog.type(out).dtype).itemsize)
    if tiled is not None:
        return tiled
    return nest(shape, [out_strides, tuple(src_strides)], lambda idx: f"{o}[{idx[0]}] = {src}[{idx[1]}];")


# a helper in the source of a plan that uses it: 8 × 8 four-byte values transposed in vectors
TRANSPOSE8 = r"""/* rows r[0..7] of 8 four-byte values transposed in three rounds of two-source interleaves
   (lane j of r[i] becomes lane i of r[j]), loaded from src (rows ls apart), stored to dst (ld) */
typedef float nnos_t8 __attribute__((vector_size(32)));
typedef int32_t nnos_i8 __attribute__((vector_size(32)));
static inline void nnos_transpose8(const void *src, long ls, void *dst, long ld) {
    const nnos_i8 lo = {0, 8, 1, 9, 2, 10, 3, 11}, hi = {4, 12, 5, 13, 6, 14, 7, 15};
    nnos_t8 r[8], t[8];
    for (int i = 0; i < 8; i++) memcpy(&r[i], (const char *)src + i * ls * 4, 32);
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < 4; i++) {
            t[2 * i] = __builtin_shuffle(r[i], r[i + 4], lo);
            t[2 * i + 1] = __builtin_shuffle(r[i], r[i + 4], hi);
        }
        for (int i = 0; i < 8; i++) r[i] = t[i];
    }
    for (int i = 0; i < 8; i++) memcpy((char *)dst + i * ld * 4, &r[i], 32);
}
"""


def _tiled(prog, dims, o: str, src: str, itemsize: int) -> str | None:
    """A copy whose last two loop dimensions swap contiguity — out[.. + b·T + a] =
    src[.. + b + a·S], a 2-D transpose (attention's Kᵀ, 65 × 8 a head) — of four-byte values,
    both at least 8: tiles of 8 × 8 through registers (nnos_transpose8), the edges one value
    at a time (the values one at a time took 0.37 µs a Kᵀ of act_s)."""
    if itemsize != 4 or len(dims) < 2:
        return None
    (nb, (ot, s1)), (na, (o1, ss)) = dims[-2], dims[-1]
    if not (o1 == 1 and s1 == 1 and nb >= 8 and na >= 8):
        return None
    if TRANSPOSE8 not in prog.helpers:
        prog.helpers.append(TRANSPOSE8)
    outer = dims[:-2]
    b8, a8 = nb // 8 * 8, na // 8 * 8

    def body(idx):
        oo, so = idx
        return "\n".join([
            f"for (long b = 0; b < {b8}; b += 8) for (long a = 0; a < {a8}; a += 8)",
            f"    nnos_transpose8({src} + {so} + b + a * {ss}, {ss}, {o} + {oo} + b * {ot} + a, {ot});",
            f"for (long b = 0; b < {nb}; b++) for (long a = b < {b8} ? {a8} : 0; a < {na}; a++)",
            f"    {o}[{oo} + b * {ot} + a] = {src}[{so} + b + a * {ss}];"])
    if not outer:
        return "{\n" + body(["0", "0"]) + "\n}"
    return nest([d for d, _ in outer], [[st[0] for _, st in outer], [st[1] for _, st in outer]], body, var="t")


def view(prog, node) -> str:
    """Reshape, Flatten, Squeeze, Unsqueeze, Identity when the plan gave the output its own
    buffer (a weight input, or an epilogue to apply): the bytes, then the chain."""
    i, o = node.inputs[0], node.outputs[0]
    n = prog.type(o).nbytes
    code = f"memmove({prog.ptr(o)}, {prog.ptr(i)}, {n});" if n else ""
    return indent(code) + "\n" + epilogue_pass(prog, node, o)


def transpose(prog, node) -> str:
    from ...ops.shape import _perm
    x, y = node.inputs[0], node.outputs[0]
    xs = prog.type(x).shape
    own = contiguous_strides(xs)
    perm = _perm(node, len(xs))
    return indent(_copy(prog, y, prog.ptr(x), [own[p] for p in perm])) + "\n" + epilogue_pass(prog, node, y)


def expand(prog, node) -> str:
    x, y = node.inputs[0], node.outputs[0]
    strides = broadcast_strides(prog.type(x).shape, prog.type(y).shape)
    return indent(_copy(prog, y, prog.ptr(x), strides)) + "\n" + epilogue_pass(prog, node, y)


def slice_(prog, node) -> str:
    from ...ops.shape import _slices
    x, y = node.inputs[0], node.outputs[0]
    xs = prog.type(x).shape
    consts = [None] + [prog.graph.consts.get(n) if n else None for n in node.inputs[1:]]
    index = _slices(node, xs, consts)
    own = contiguous_strides(xs)
    base, strides = 0, []
    for d, sl in enumerate(index):
        start, _stop, step = sl.indices(xs[d])
        if len(range(*sl.indices(xs[d]))):
            base += start * own[d]
        strides.append(step * own[d])
    return indent(_copy(prog, y, f"({prog.ptr(x)} + {base})", strides)) + "\n" + epilogue_pass(prog, node, y)


def concat(prog, node) -> str:
    y = node.outputs[0]
    ys = prog.type(y).shape
    axis = int(node.attrs["axis"]) % len(ys)
    out_strides = contiguous_strides(ys)
    parts, start = [], 0
    for x in node.inputs:
        if not x:
            continue
        xs = prog.type(x).shape
        parts.append(_copy(prog, y, prog.ptr(x), contiguous_strides(xs), start * out_strides[axis], xs, out_strides))
        start += xs[axis]
    return indent("\n".join(parts)) + "\n" + epilogue_pass(prog, node, y)


def split(prog, node) -> str:
    x = node.inputs[0]
    xs = prog.type(x).shape
    axis = int(node.attrs.get("axis", 0)) % len(xs)
    own = contiguous_strides(xs)
    parts, start = [], 0
    for o in node.outputs:
        n = prog.type(o).shape[axis]
        if o:
            parts.append(_copy(prog, o, f"({prog.ptr(x)} + {start * own[axis]})", own))
        start += n
    return indent("\n".join(parts))


def gather(prog, node) -> str:
    """Blocks of the data along ``axis`` picked by index; an index wraps modulo the axis, as
    the reference's ``np.take(mode="wrap")`` does (negative ones count from the end)."""
    x, idx, y = node.inputs[0], node.inputs[1], node.outputs[0]
    xs = prog.type(x).shape
    axis = int(node.attrs.get("axis", 0)) % len(xs)
    outer = int(np.prod(xs[:axis], dtype=np.int64))
    size = xs[axis]
    inner = int(np.prod(xs[axis + 1:], dtype=np.int64))
    nidx = prog.type(idx).size
    item = prog.type(x).dtype.itemsize
    if size == 0 or outer * nidx * inner == 0:
        return "        /* empty */"
    st = storage(prog.type(x).dtype)
    lines = [f"const {st} *X = {prog.ptr(x)}; {st} *Y = {prog.ptr(y)}; const {storage(prog.type(idx).dtype)} *I = "
             f"{prog.ptr(idx)};",
             f"for (long o = 0; o < {outer}; o++) for (long i = 0; i < {nidx}; i++) {{",
             f"    long j = (long)I[i] % {size}; if (j < 0) j += {size};",
             f"    memcpy(Y + (o * {nidx} + i) * {inner}, X + (o * {size} + j) * {inner}, {inner * item});",
             "}"]
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


def constant(prog, node) -> str:
    """Shape, Constant, Range: the value the reference computes once, copied in."""
    from ...ops.shape import _range_values, _shape_value
    y = node.outputs[0]
    if node.op == "Range":
        value = _range_values(node, [prog.graph.consts.get(i) for i in node.inputs])
    else:
        value = _shape_value(node, prog.type(node.inputs[0])) if node.op == "Shape" else np.asarray(node.attrs["value"])
    if value.size == 0:
        return "        /* empty */"
    src = prog.const(f"{y}@value", value, prog.type(y).dtype)
    return indent(f"memcpy({prog.ptr(y)}, {src}, {prog.type(y).nbytes});") + "\n" + epilogue_pass(prog, node, y)


def constant_of_shape(prog, node) -> str:
    from ...ops.shape import _fill_value
    y = node.outputs[0]
    t = prog.type(y)
    v = literal(_fill_value(node).item(), t.dtype)
    return indent(f"for (long i = 0; i < {t.size}; i++) {prog.ptr(y)}[i] = ({storage(t.dtype)}){v};") + \
        "\n" + epilogue_pass(prog, node, y)


def _pad_index(mode: str, p: str, n: int) -> str:
    """A C expression: the input index that padded position ``p`` reads (constant: as is)."""
    if mode == "edge":
        return f"({p} < 0 ? 0 : ({p} >= {n} ? {n - 1} : {p}))"
    if mode == "wrap":
        return f"((({p}) % {n} + {n}) % {n})"
    if mode == "reflect":            # numpy's reflect (the edge not repeated), period 2(n−1)
        if n == 1:
            return "0"
        per = 2 * (n - 1)
        return f"({{ long r_ = (({p}) % {per} + {per}) % {per}; r_ < {n} ? r_ : {per} - r_; }})"
    return p


def pad(prog, node) -> str:
    """Pad (constant, edge, reflect, wrap; negative pads crop): each output element reads its
    input position per axis, or the constant outside."""
    from ...ops.shape import pad_geometry
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = prog.type(x).shape, prog.type(y).shape
    g = prog.graph
    consts = [None, g.consts.get(node.inputs[1])] + [None] + [g.consts.get(node.inputs[3]) if len(node.inputs) > 3
                                                             and node.inputs[3] else None]
    begin, end, mode = pad_geometry(node, xs, consts)
    if prog.type(y).size == 0:
        return "        /* empty */"
    dt = prog.type(y).dtype
    st = storage(dt)
    value = "0"
    if mode == "constant" and len(node.inputs) > 2 and node.inputs[2]:
        value = f"(({st} const *){prog.ptr(node.inputs[2])})[0]"
    xst = contiguous_strides(xs)
    lines = [f"const {st} *X = {prog.ptr(x)}; {st} *Y = {prog.ptr(y)}; long j = 0;"]
    lines += [f"for (long o{d} = 0; o{d} < {n}; o{d}++)" for d, n in enumerate(ys)]
    body = []
    for d, n in enumerate(xs):
        body.append(f"long p{d} = {_pad_index(mode, f'o{d} - {begin[d]}', n)};")
    outside = " || ".join(f"p{d} < 0 || p{d} >= {n}" for d, n in enumerate(xs)) or "0"
    src = " + ".join(f"p{d} * {xst[d]}" for d in range(len(xs))) or "0"
    body.append(f"Y[j++] = ({outside}) ? ({st}){value} : X[{src}];")
    lines.append("{ " + " ".join(body) + " }")
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)
