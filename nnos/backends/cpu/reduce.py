"""Reductions and normalisations: ReduceSum, ReduceMean, ReduceMax, ReduceMin; Softmax and LogSoftmax
over any axis; LayerNormalization; BatchNormalization (inference) — any dtype the reference
takes, in the reference's order of operations (ops/reduce.py, ops/norm.py).
"""
from __future__ import annotations

import numpy as np

from .emit import after_split, indent
from .ctype import compute, highest, libm, literal, lowest, storage
from .elementwise import epilogue_pass, unary_chain
from .loops import broadcast_strides, contiguous_strides, nest
from .qstore import disjoint
from .softmax import rows as softmax_rows


NORM_ROWS = 4        # rows a LayerNormalization group interleaves (_norm_rows)

def _round(dt, v: str) -> str:
    """A value rounded to ``dt`` (float16 results round after each op, as numpy's do)."""
    return f"((float)(_Float16)({v}))" if np.dtype(dt) == np.float16 else f"({v})"


def reduce(prog, node) -> str:
    from ...ops.reduce import _axes
    x, y = node.inputs[0], node.outputs[0]
    xt, yt = prog.type(x), prog.type(y)
    in_types = [xt] + [prog.type(i) if i else None for i in node.inputs[1:]]
    consts = [None] + [prog.graph.consts.get(i) if i else None for i in node.inputs[1:]]
    axes = _axes(node, in_types, consts)
    dt = xt.dtype
    ct, st = compute(dt), storage(dt)
    if axes is None:                          # noop_with_empty_axes: a copy
        return indent(f"memmove({prog.ptr(y)}, {prog.ptr(x)}, {yt.nbytes});" if yt.nbytes else "") + \
            "\n" + epilogue_pass(prog, node, y)
    is_max, is_min = node.op == "ReduceMax", node.op == "ReduceMin"
    boolean = dt == np.bool_
    if xt.size == 0:
        ident = lowest(dt) if is_max else highest(dt) if is_min else literal(0, dt)
        code = f"for (long i = 0; i < {yt.size}; i++) {prog.ptr(y)}[i] = ({st}){ident};"
        return indent(code) + "\n" + epilogue_pass(prog, node, y)
    kept = tuple(1 if d in axes else s for d, s in enumerate(xt.shape))
    red = tuple(s if d in axes else 1 for d, s in enumerate(xt.shape))
    also = prog.step_after(y)
    fast = _vector_extreme(prog, node, kept, red, also) if (is_max or is_min) and dt == np.float32 else None
    if fast is not None:
        if also is None:
            return indent(fast) + "\n" + epilogue_pass(prog, node, y)
        prog.after_taken.add(y)
        return indent(fast) + "\n" + epilogue_pass(prog, node, y) + "\n" + epilogue_pass(prog, also, also.outputs[0])
    own = contiguous_strides(xt.shape)
    count = int(np.prod(red, dtype=np.int64))
    if boolean:
        combine = "acc = acc & v;" if is_min else "acc = acc | v;"
    elif is_max:
        combine = "acc = (v != v || v > acc) ? v : acc;"
    elif is_min:
        combine = "acc = (v != v || v < acc) ? v : acc;"
    else:
        combine = f"acc = {_round(dt, 'acc + v')};"
    start = lowest(dt) if is_max else highest(dt) if is_min else literal(0, dt)
    mean = node.op == "ReduceMean"
    inv = literal(1.0 / max(1, count), dt)

    def outer(idx):
        inner = nest(red, [own], lambda j: f"{ct} v = ({ct})xb[{j[0]}]; {combine}", var="r")
        result = _round(dt, f"acc * {inv}") if mean else "acc"
        return "\n".join([f"const {st} *xb = {prog.ptr(x)} + {idx[1]}; {ct} acc = {start};", inner,
                          f"{prog.ptr(y)}[{idx[0]}] = ({st})({result});"])
    code = nest(kept, [contiguous_strides(kept), own], outer)
    return indent(code) + "\n" + epilogue_pass(prog, node, y)


def choose_ranges(prog, skip: set) -> dict[str, int]:
    """A ReduceMin and a ReduceMax (either first) of the same float32 values over the same axes,
    one the very next step of the other — a dynamically quantized model's range of each
    activation it quantizes: the first's output → the second's step (added to ``skip``), which
    the first's kernel runs in the same pass over the values (``_vector_extreme``; codegen puts
    it back when the kernel did not). The second's epilogue (its scale: Max, Sub of the first's
    result, Div) runs after the first's, which writes what it reads."""
    g, chosen = prog.graph, {}
    live = [s for s in range(len(g.nodes)) if s not in skip]
    for s, nxt in zip(live, live[1:]):
        a, b = g.nodes[s], g.nodes[nxt]
        if {a.op, b.op} != {"ReduceMin", "ReduceMax"} or a.inputs != b.inputs or a.attrs != b.attrs:
            continue
        if prog.type(a.inputs[0]).dtype != np.float32 or prog.type(a.outputs[0]) != prog.type(b.outputs[0]):
            continue
        chosen[a.outputs[0]] = nxt
        skip.add(nxt)
    return chosen


def _vector_extreme(prog, node, kept: tuple, red: tuple, also=None) -> str | None:
    """ReduceMax or ReduceMin of float32 over trailing axes (a contiguous block a result): four
    vectors of running extremes (minps/maxps) and of NaNs seen, whole vectors past them into the
    first, the four folded and their lanes halved (one scalar chain over 64 lanes took about as
    long as act_s's 2 080-value passes), then the block's tail — NaN when one was seen, as the
    scalar loop's. The scalar loop took 19 µs for
    65 536 values: a dynamically quantized model computes the range of every activation it
    quantizes — with ``also`` (choose_ranges) its other extreme in the same pass: the values
    read once, not twice. (Selects that kept a NaN in place cost three ops an extreme a vector.)"""
    outer, count = int(np.prod(kept)), int(np.prod(red))
    last_kept = max((d for d, k in enumerate(kept) if k > 1), default=-1)
    trailing = last_kept < min((d for d, r in enumerate(red) if r > 1), default=len(red))
    if not trailing or count < 4 * prog.vw:
        return None
    ends = [(node.op, node.outputs[0])] + ([(also.op, also.outputs[0])] if also is not None else [])
    lines = [f"const float *X = {prog.ptr(node.inputs[0])};",
             f"for (long o = 0; o < {outer}; o++) {{",
             f"    const float *xb = X + o * {count}; long i = 0; vi nan[4] = {{{{0}}, {{0}}, {{0}}, {{0}}}}; int seen = 0;"]
    for e, (op, _) in enumerate(ends):
        lines.append(f"    vf m{e}[4]; for (int k = 0; k < 4; k++) m{e}[k] = vsplat({_start(op)});")
    update = " ".join(f"m{e}[k] = {_extreme(op)}(m{e}[k], v);" for e, (op, _) in enumerate(ends))
    lines += [f"    for (; i + 4 * VW <= {count}; i += 4 * VW)",
              f"        for (int k = 0; k < 4; k++) {{ vf v = vload(xb + i + k * VW); nan[k] |= (v != v); {update} }}",
              f"    for (; i + VW <= {count}; i += VW) {{ const int k = 0; vf v = vload(xb + i); nan[0] |= (v != v); {update} }}",
              "    for (int k = 0; k < 4; k++) for (int l = 0; l < VW; l++) seen |= nan[k][l];"]
    for e, (op, y) in enumerate(ends):
        pick = f"(v != v || v {_cmp(op)} a) ? v : a"
        f = _extreme(op)
        folded = f"{f}({f}(m{e}[0], m{e}[1]), {f}(m{e}[2], m{e}[3]))"
        lanes = f"vhmax({folded})" if op == "ReduceMax" else f"-vhmax(-{folded})"
        lines += [f"    {{ float a = {lanes};",
                  f"      for (long j = i; j < {count}; j++) {{ float v = xb[j]; a = {pick}; }}",
                  f"      {prog.ptr(y)}[o] = seen ? __builtin_nanf(\"\") : a; }}"]
    return "\n".join(lines + ["}"])


def _cmp(op: str) -> str:
    return ">" if op == "ReduceMax" else "<"


def _start(op: str) -> str:
    return lowest(np.float32) if op == "ReduceMax" else highest(np.float32)


def softmax(prog, node) -> str:
    """Softmax / LogSoftmax along one axis: max, exp(x − max), sum, then divide (or subtract
    the sum's log) — a NaN anywhere on the axis makes that whole slice NaN, as in the reference."""
    x, y = node.inputs[0], node.outputs[0]
    xt = prog.type(x)
    shape = xt.shape
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    n = shape[axis]
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    dt = xt.dtype
    ct, st = compute(dt), storage(dt)
    log = node.op == "LogSoftmax"
    e, lg = libm("exp", dt), libm("log", dt)
    r = lambda v: _round(dt, v)   # noqa: E731
    if xt.size == 0:
        return "        /* empty */"
    if dt == np.float32 and inner == 1 and not log:
        chain = unary_chain(prog, node)
        return softmax_rows(prog, x, y, outer, n, chain) + "\n" + \
            after_split(prog, epilogue_pass(prog, node, y, in_registers=True))
    lines = [f"const {st} *X = {prog.ptr(x)}; {st} *Y = {prog.ptr(y)};",
             f"for (long o = 0; o < {outer}; o++) for (long q = 0; q < {inner}; q++) {{",
             f"    const {st} *xr = X + o * {n * inner} + q; {st} *yr = Y + o * {n * inner} + q;",
             f"    {ct} m = ({ct})xr[0];",
             f"    for (long i = 1; i < {n}; i++) {{ {ct} v = ({ct})xr[i * {inner}]; m = (v != v || v > m) ? v : m; }}",
             f"    {ct} s = 0;"]
    xi = f"({ct})xr[i * {inner}]"
    shifted = r(f"{xi} - m")
    if log:
        lines.append(f"    for (long i = 0; i < {n}; i++) s = {r(r(f'{e}({shifted})') + ' + s')};")
        lines.append(f"    s = {r(f'{lg}(s)')};")
        lines.append(f"    for (long i = 0; i < {n}; i++) yr[i * {inner}] = ({st}){r(shifted + ' - s')};")
    else:
        lines.append(f"    for (long i = 0; i < {n}; i++) {{ {ct} v = {r(f'{e}({shifted})')}; "
                     f"yr[i * {inner}] = ({st})v; s = {r('s + v')}; }}")
        lines.append(f"    for (long i = 0; i < {n}; i++) yr[i * {inner}] = ({st})(({ct})yr[i * {inner}] / s);")
    lines.append("}")
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


def rms_norm(prog, node) -> str:
    """RMSNormalization: LayerNormalization without the mean (and without a bias)."""
    return layer_norm(prog, node, centred=False)


def layer_norm(prog, node, centred: bool = True) -> str:
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if centred and len(node.inputs) > 2 and node.inputs[2] else ""
    outs = list(node.outputs) + ["", ""] if centred else [node.outputs[0], "", ""]
    y, mean_out, inv_out = outs[:3]
    xt = prog.type(x)
    shape = xt.shape
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    rows = int(np.prod(shape[:axis], dtype=np.int64))
    n = int(np.prod(shape[axis:], dtype=np.int64))
    dt = xt.dtype
    if _rows_ok(prog, node, shape, axis, [scale, bias]) and not mean_out and not inv_out:
        return _norm_rows(prog, node, x, scale, bias, y, rows, n, centred) + "\n" + \
            after_split(prog, epilogue_pass(prog, node, y))
    ct, st = compute(dt), storage(dt)
    r = lambda v: _round(dt, v)   # noqa: E731
    eps = literal(node.attrs.get("epsilon", 1e-5), dt)
    inv_n = literal(1.0 / n, dt)
    M, _ = prog.ws(rows * 8, ct)
    V, _ = prog.ws(rows * 8, ct)
    sq = libm("sqrt", dt)
    lines = [f"const {st} *X = {prog.ptr(x)}; {ct} *M = {M}; {ct} *V = {V};",
             f"for (long o = 0; o < {rows}; o++) {{",
             f"    const {st} *xr = X + o * {n}; {ct} s = 0;",
             f"    for (long i = 0; i < {n}; i++) s = {r(f'({ct})xr[i] + s')};",
             f"    {ct} m = {r(f's * {inv_n}') if centred else literal(0, dt)}; {ct} q = 0;",
             f"    for (long i = 0; i < {n}; i++) {{ {ct} d = {r(f'({ct})xr[i] - m')}; q = {r(r('d * d') + ' + q')}; }}",
             f"    q = {r(f'q * {inv_n}')}; q = {r(f'q + {eps}')}; q = {r(f'{sq}(q)')};",
             f"    M[o] = m; V[o] = {r(f'{literal(1, dt)} / q')};",
             "}"]
    stat_shape = shape[:axis] + (1,) * (len(shape) - axis)
    operands = [contiguous_strides(shape), contiguous_strides(shape), broadcast_strides(stat_shape, shape),
                broadcast_strides(prog.type(scale).shape, shape)]
    if bias:
        operands.append(broadcast_strides(prog.type(bias).shape, shape))

    def body(idx):
        centred = r(f"({ct})X[{idx[1]}] - M[{idx[2]}]")
        v = r(r(f"{centred} * V[{idx[2]}]") + f" * ({ct}){prog.ptr(scale)}[{idx[3]}]")
        if bias:
            v = r(f"{v} + ({ct}){prog.ptr(bias)}[{idx[4]}]")
        return f"{prog.ptr(y)}[{idx[0]}] = ({st})({v});"
    lines.append(nest(shape, operands, body))
    for out, buf in ((mean_out, "M"), (inv_out, "V")):
        if out:
            lines.append(f"for (long o = 0; o < {rows}; o++) {prog.ptr(out)}[o] = "
                         f"({storage(prog.type(out).dtype)}){buf}[o];")
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


def _rows_ok(prog, node, shape, axis: int, params: list[str]) -> bool:
    """float32 rows whose scale (and bias) are one row each: the vector form applies."""
    if prog.type(node.inputs[0]).dtype != np.float32 or prog.type(node.outputs[0]).dtype != np.float32:
        return False
    row = int(np.prod(shape[axis:], dtype=np.int64))
    return all(prog.type(p).dtype == np.float32 and prog.type(p).size == row for p in params if p)


def _norm_rows(prog, node, x: str, scale: str, bias: str, y: str, rows: int, n: int, centred: bool) -> str:
    """LayerNormalization (or RMSNormalization, not centred) of float32 rows: the mean and the
    mean square each one pass of vectors, then (x − m)·(1/σ)·scale (+ bias) in one more,
    NORM_ROWS rows at a time, their statements interleaved (a short row's sums, root and
    division are one chain of dependent steps; its neighbours' hide it). On a team, each thread
    its own rows."""
    split = prog.share(rows * n * 4, rows)
    lo, hi = ("lo", "hi") if split else ("0", str(rows))
    return indent("\n".join([
        f"const float *X = {prog.tensor(x)}; float *Y = {prog.tensor(y)}; const float *Sc = {prog.tensor(scale)};",
        f"const float *Bn = {prog.tensor(bias) if bias else 'NULL'}; (void)Bn;",
        *([split] if split else []),
        f"long o = {lo};",
        f"for (; o + {NORM_ROWS} <= {hi}; o += {NORM_ROWS})",
        *_norm_group(node, n, NORM_ROWS, bool(bias), centred),
        f"for (; o < {hi}; o++)",
        *_norm_group(node, n, 1, bool(bias), centred)]))


def _norm_group(node, n: int, count: int, bias: bool, centred: bool) -> list[str]:
    """``count`` rows from row ``o`` on, each row's operations in the order one row had them."""
    def each(c: str) -> str:          # "@": the row's number in the group
        return " ".join(c.replace("@", str(r)) for r in range(count))
    eps = literal(node.attrs.get("epsilon", 1e-5), np.float32)
    inv = literal(1.0 / n, np.float32)
    add, sadd = (" + vload(Bn + i)", " + Bn[j]") if bias else ("", "")
    mean = [f"  for (; i + VW <= {n}; i += VW) {{ " + each("sv@ += vload(x@ + i);") + " }",
            f"  for (long j = i; j < {n}; j++) {{ " + each("s@ += x@[j];") + " }",
            "  " + each(f"s@ += vhsum(sv@); const float m@ = s@ * {inv};")]
    return [
        "{ " + each(f"const float *x@ = X + (o + @) * {n}; float *y@ = Y + (o + @) * {n}; "
                    "vf sv@ = vsplat(0.0f); float s@ = 0.0f; (void)sv@; (void)s@;") + " long i = 0;",
        *(mean if centred else ["  " + each("const float m@ = 0.0f;")]),
        "  " + each("vf mm@ = vsplat(m@), qv@ = vsplat(0.0f); float q@ = 0.0f;"),
        f"  for (i = 0; i + VW <= {n}; i += VW) {{ " + each("{ vf d = vload(x@ + i) - mm@; qv@ += d * d; }") + " }",
        f"  for (long j = i; j < {n}; j++) {{ " + each("{ float d = x@[j] - m@; q@ += d * d; }") + " }",
        "  " + each(f"q@ += vhsum(qv@); const float r@ = 1.0f / sqrtf(q@ * {inv} + {eps}); const vf rv@ = vsplat(r@);"),
        f"  for (i = 0; i + VW <= {n}; i += VW) {{ "
        + each(f"vstore(y@ + i, (vload(x@ + i) - mm@) * rv@ * vload(Sc + i){add});") + " }",
        f"  for (long j = i; j < {n}; j++) {{ " + each(f"y@[j] = (x@[j] - m@) * r@ * Sc[j]{sadd};") + " } }"]


def batch_norm(prog, node) -> str:
    """y = x·a + b per channel, a = scale / sqrt(var + eps), b = bias − mean·a (computed per
    call from the inputs, constants or not: one pass over the channels)."""
    x, scale, bias, mean, var = node.inputs[:5]
    y = node.outputs[0]
    xt = prog.type(x)
    shape = xt.shape
    ch = shape[1]
    dt = xt.dtype
    ct, st = compute(dt), storage(dt)
    r = lambda v: _round(dt, v)   # noqa: E731
    eps = literal(node.attrs.get("epsilon", 1e-5), dt)
    A, _ = prog.ws(ch * 8, ct)
    B, _ = prog.ws(ch * 8, ct)
    p = {k: f"({ct}){prog.ptr(v)}[c]" for k, v in (("s", scale), ("b", bias), ("m", mean), ("v", var))}
    root = r(f"{libm('sqrt', dt)}({r(p['v'] + ' + ' + eps)})")
    a = r(f"{p['s']} / {root}")
    b = r(f"{p['b']} - {r(p['m'] + ' * a')}")
    lines = [f"{ct} *A = {A}; {ct} *B = {B};",
             f"for (long c = 0; c < {ch}; c++) {{ {ct} a = {a}; A[c] = a; B[c] = {b}; }}"]
    chan = tuple(1 if d == 1 else 0 for d in range(len(shape)))
    operands = [contiguous_strides(shape), contiguous_strides(shape), chan]

    def body(idx):
        v = r(r(f"({ct}){prog.ptr(x)}[{idx[1]}] * A[{idx[2]}]") + f" + B[{idx[2]}]")
        return f"{prog.ptr(y)}[{idx[0]}] = ({st})({v});"
    lines.append(nest(shape, operands, body))
    return indent("\n".join(lines)) + "\n" + epilogue_pass(prog, node, y)


# --- a dynamically quantized activation's range, taken in the pass that computes it -------------------
RANGE_REACH = 4     # live steps a range may come after its producer: the others another branch's


def choose_range_producers(prog, skip: set) -> dict[str, int]:
    """A DequantizeLinear or Cast of int32 sums followed by a ReduceMin or ReduceMax of its whole
    output (a dynamically quantized model's range of the next product's input) — the very next
    step, or within RANGE_REACH steps of another branch (act_s's state, between its first
    convolution's range and the convolution: 0.44 µs) whose tensors' bytes are not the range's:
    its output → that step (added to ``skip``), which the dequantizing pass runs too — the
    values read once, not once more (mbv2_s's 64 × 32 × 32 activations: 3.8 µs a pass). Run
    after ``choose_ranges``, whose pairing of the two extremes it keeps."""
    g, chosen = prog.graph, {}
    live = [s for s in range(len(g.nodes)) if s not in skip]
    for k, s in enumerate(live):
        node = g.nodes[s]
        if node.op not in ("DequantizeLinear", "Cast") or len(node.outputs) != 1:
            continue
        y = node.outputs[0]
        if y in g.outputs or prog.type(y).dtype != np.float32:
            continue
        for nxt in live[k + 1:k + 1 + RANGE_REACH]:
            r = g.nodes[nxt]
            if r.op in ("ReduceMin", "ReduceMax") and r.inputs and r.inputs[0] == y \
                    and prog.type(r.outputs[0]).size == 1 and _range_bytes_free(prog, r, range(s + 1, nxt)):
                chosen[y] = nxt
                skip.add(nxt)
                break
    return chosen


def _range_bytes_free(prog, r, between) -> bool:
    """Whether the nodes ``between`` a range's producer and the range (its ReduceMin or ReduceMax
    ``r``, and the other extreme ``choose_ranges`` paired with it) — run there, or by a step
    before (a QuantizeLinear's bytes stored early) — touch none of the extremes' bytes:
    computed by the producer, the extremes are written before those nodes run."""
    g = prog.graph
    ends = [r.outputs[0]] + ([g.nodes[prog.after[r.outputs[0]]].outputs[0]] if r.outputs[0] in prog.after else [])
    touched = [t for s in between for t in [*g.nodes[s].inputs, *g.nodes[s].outputs] if t]
    return all(disjoint(prog, e, touched) for e in ends)


def range_after(prog, out: str):
    """The Range a pass computing ``out`` may take (``choose_range_producers``), or None."""
    r = Range(prog, out)
    return r if r.ends else None


def _extreme(op: str) -> str:
    """The running extreme's update, m = f(m, v): the prelude's vmaxnan(m, v) is v > m ? v : m
    (on x86 one maxps), vminnan(m, v) v < m ? v : m — a NaN v leaves m as it was (NaNs are
    counted apart)."""
    return "vmaxnan" if op == "ReduceMax" else "vminnan"


class Range:
    """The extremes a pass over float32 values takes for the ReduceMin and ReduceMax after it
    (``choose_range_producers``, then ``choose_ranges``): running vectors and scalars, with a
    NaN seen kept apart (a min or max chain of one op a vector; the selects that keep a NaN in
    place were a chain of three, and made mbv2_s's pass three times as long); ``finish``
    stores them — NaN when one was seen, as the reference's — and runs their epilogues."""

    def __init__(self, prog, out: str):
        self.prog, self.out = prog, out
        first = prog.step_after(out)
        ok = first is not None and first.inputs[0] == out
        second = prog.step_after(first.outputs[0]) if ok else None
        self.ends = ([first] + ([second] if second is not None and second.inputs[0] == out else [])) if ok else []

    def decl(self) -> str:
        return "vi rn = {0}; int Rn = 0; " + " ".join(f"vf r{e} = vsplat({_start(n.op)}); float R{e} = {_start(n.op)};"
                                                      for e, n in enumerate(self.ends))

    def vector(self, v: str) -> str:
        return f"rn |= ({v} != {v}); " + " ".join(
            f"r{e} = {_extreme(n.op)}(r{e}, {v});" for e, n in enumerate(self.ends))

    def scalar(self, v: str) -> str:
        return f"Rn |= ({v} != {v}); " + " ".join(f"R{e} = {v} {_cmp(n.op)} R{e} ? {v} : R{e};"
                                                  for e, n in enumerate(self.ends))

    def finish(self) -> str:
        prog, passes = self.prog, []
        lines = ["for (int l = 0; l < VW; l++) Rn |= rn[l];"]
        for e, n in enumerate(self.ends):
            lines.append(f"for (int l = 0; l < VW; l++) {{ float v = r{e}[l]; R{e} = v {_cmp(n.op)} R{e} ? v : R{e}; }} "
                         f"{prog.ptr(n.outputs[0])}[0] = Rn ? __builtin_nanf(\"\") : R{e};")
            passes.append(epilogue_pass(prog, n, n.outputs[0]))
        prog.after_taken.add(self.out)
        if len(self.ends) > 1:
            prog.after_taken.add(self.ends[0].outputs[0])
        return indent("\n".join(lines)) + "".join("\n" + p for p in passes if p)
