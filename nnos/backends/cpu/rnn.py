"""GRU and LSTM: every variant the numpy reference runs (layouts 0 and 1, forward, reverse and
bidirectional, batches, initial states, peepholes, clip, linear_before_reset, the activation
functions of ops/rnn.py), with its arithmetic in the same order.

Per direction, per time step, per batch row: two matrix-vector products — the input's
(W·x + biases) and the recurrence's (R·h) — then the gate arithmetic, one hidden unit at a
time. With constant float32 weights the products are vectorized over the gates (the weights
transposed at bind time, so a row of Wᵀ is one contiguous vector stream; biases combined) and
the default activations are the prelude's inline rational tanh/sigmoid, which gcc vectorizes in
the gate loop. Otherwise (run-time weights, other dtypes) they are plain dot products per row,
in the compute type.
"""
from __future__ import annotations

import numpy as np

from ...ops.rnn import split_bias
from .emit import Unsupported, indent
from .ctype import compute, literal, storage
from .scalar import expr

GEMV = """
static void nnos_gemv(const float *restrict x, const float *restrict W, int K, int N, int ldw,
                      const float *restrict bias, float *restrict out) {
    int j = 0;
    for (; j + 2 * VW <= N; j += 2 * VW) {
        vf a0 = bias ? vload(bias + j) : vsplat(0.0f), a1 = bias ? vload(bias + j + VW) : vsplat(0.0f);
        for (int k = 0; k < K; k++) {
            vf xv = vsplat(x[k]);
            a0 += xv * vload(W + k * ldw + j); a1 += xv * vload(W + k * ldw + j + VW);
        }
        vstore(out + j, a0); vstore(out + j + VW, a1);
    }
    for (; j + VW <= N; j += VW) {
        vf acc = bias ? vload(bias + j) : vsplat(0.0f);
        for (int k = 0; k < K; k++) acc += vsplat(x[k]) * vload(W + k * ldw + j);
        vstore(out + j, acc);
    }
    for (; j < N; j++) {
        float s = bias ? bias[j] : 0.0f;
        for (int k = 0; k < K; k++) s += x[k] * W[k * ldw + j];
        out[j] = s;
    }
}
"""

_FAST_ACT = {"Sigmoid": "ssigmoid", "Tanh": "stanh", "Relu": "srelu"}


def _act(fast: bool, op: str, attrs: dict, v: str, dt) -> str:
    if fast and op in _FAST_ACT and not attrs:
        return f"{_FAST_ACT[op]}({v})"
    return expr(op, [v], dt, dt, attrs)


def rnn(prog, node) -> str:
    from ...ops.rnn import _spec
    gates, direction, ndir, acts = _spec(node)
    ins = list(node.inputs) + [""] * (8 - len(node.inputs))
    x, w, r, b, _lens, h0, c0, p = ins[:8]
    if gates == 3:
        c0 = p = ""
    at = node.attrs
    layout = int(at.get("layout", 0))
    xs = prog.type(x).shape
    seq, batch = (xs[0], xs[1]) if layout == 0 else (xs[1], xs[0])
    isz = xs[2]
    hid = prog.type(w).shape[1] // gates
    gh_n = gates * hid
    dt = prog.type(x).dtype
    ct = compute(dt)
    lbr = int(at.get("linear_before_reset", 0))
    clip = at.get("clip")
    consts = prog.graph.consts
    fast = dt == np.float32 and w in consts and r in consts and (not b or b in consts)
    if node.epilogue:
        raise Unsupported("an epilogue on a recurrent op")
    outs = list(node.outputs) + [""] * (3 - len(node.outputs))
    y, yh, yc = outs[:3]

    hbuf, _ = prog.ws(batch * hid * 8, ct)           # 8 bytes an element: room for any compute type
    cbuf, _ = prog.ws(batch * hid * 8, ct)
    gx, _ = prog.ws(gh_n * 8, ct)
    gh, _ = prog.ws(gh_n * 8, ct)
    tmp, _ = prog.ws(hid * 8, ct)
    hn, _ = prog.ws(hid * 8, ct)
    if fast and GEMV not in prog.helpers:
        prog.helpers.append(GEMV)

    def clipped(v):
        if clip is None:
            return v
        lim = literal(float(clip), dt)
        return f"NNOS_MAX(NNOS_MIN({v}, {lim}), -{lim})"

    lines = [f"{ct} *h = {hbuf}; {ct} *c = {cbuf}; {ct} *gx = {gx}; {ct} *gh = {gh}; {ct} *tmp = {tmp}; "
             f"{ct} *hn = {hn}; (void)c; (void)tmp;",
             f"const {storage(dt)} *X = {prog.ptr(x)};"]
    for d in range(ndir):
        forward = direction == "forward" or (direction == "bidirectional" and d == 0)
        lines.append(f"/* direction {d}: {'forward' if forward else 'reverse'} */")
        lines.append("{")
        body = _direction(prog, node, d, forward, fast, acts[d], clipped, lines_ctx=dict(
            x=x, w=w, r=r, b=b, h0=h0, c0=c0, p=p, y=y, yh=yh, yc=yc, seq=seq, batch=batch, isz=isz, hid=hid,
            gates=gates, ndir=ndir, layout=layout, lbr=lbr, dt=dt, ct=ct))
        lines.append(indent(body, 4))
        lines.append("}")
    return indent("\n".join(lines))


class _Products:
    """One direction's matrix-vector products in C: gx = W·x (+ biases), gh = R·h (+ Rb where it
    stays with R·h). The fast form (float32, constant weights) calls nnos_gemv on weights packed
    at bind time; the generic form loops over the weights where they are."""

    def __init__(self, prog, v: dict, d: int, fast: bool):
        self.v, self.fast = v, fast
        hid, gates, isz = v["hid"], v["gates"], v["isz"]
        self.gh_n = gh_n = gates * hid
        consts = prog.graph.consts
        if fast:
            bias = consts[v["b"]][d] if v["b"] else np.zeros(2 * gh_n, np.float32)
            bw, br = split_bias(bias, gates, hid, np.float32)
            self.WT = prog.const(f"{v['w']}@rnnT{d}", consts[v["w"]][d].astype(np.float32).T)      # (I, G·H)
            self.RT = prog.const(f"{v['r']}@rnnT{d}", consts[v["r"]][d].astype(np.float32).T)      # (H, G·H)
            self.BW = prog.const(f"{v['b'] or v['w']}@rnnbw{d}", bw)
            self.BR = prog.const(f"{v['b'] or v['w']}@rnnbr{d}", br)
        else:
            self.W = f"({prog.ptr(v['w'])} + {d * gh_n * isz})"
            self.R = f"({prog.ptr(v['r'])} + {d * gh_n * hid})"
            self.B = f"({prog.ptr(v['b'])} + {d * 2 * gh_n})" if v["b"] else None

    def inputs(self) -> list[str]:
        v, gh_n, ct = self.v, self.gh_n, self.v["ct"]
        if self.fast:
            return [f"nnos_gemv(xt, {self.WT}, {v['isz']}, {gh_n}, {gh_n}, {self.BW}, gx);"]
        both = gh_n if v["gates"] == 4 else 2 * v["hid"]
        bias = f"({ct}){self.B}[j] + (j < {both} ? ({ct}){self.B}[{gh_n} + j] : 0)" if self.B else "0"
        return [f"for (long j = 0; j < {gh_n}; j++) {{ {ct} s = {bias};",
                f"    for (long k = 0; k < {v['isz']}; k++) s += ({ct}){self.W}[j * {v['isz']} + k] * ({ct})xt[k];",
                "    gx[j] = s; }"]

    def recurrent(self, src: str, first: int, count: int, bias_from_rb: bool) -> list[str]:
        """gh[first:first+count] = R[first:first+count]·src (+ Rb of those gates when asked)."""
        hid, gh_n, ct = self.v["hid"], self.gh_n, self.v["ct"]
        if self.fast:
            return [f"nnos_gemv({src}, {self.RT} + {first}, {hid}, {count}, {gh_n}, "
                    f"{f'{self.BR} + {first}' if bias_from_rb else 'NULL'}, gh + {first});"]
        bias = f"({ct}){self.B}[{gh_n} + {first} + j]" if (bias_from_rb and self.B) else "0"
        return [f"for (long j = 0; j < {count}; j++) {{ {ct} s = {bias};",
                f"    for (long k = 0; k < {hid}; k++) s += ({ct}){self.R}[({first} + j) * {hid} + k] * {src}[k];",
                f"    gh[{first} + j] = s; }}"]


def _gru_step(mv: _Products, v: dict, acts, A, clipped) -> list[str]:
    """One GRU step for one batch row: gates z and r, then the candidate, into hn."""
    hid, ct, lbr = v["hid"], v["ct"], v["lbr"]
    f_op, g_op = acts[0], acts[1]
    step = mv.recurrent("hb", 0, 2 * hid, False)
    if lbr:
        step += mv.recurrent("hb", 2 * hid, hid, True)
    step.append(f"for (long j = 0; j < {hid}; j++) {{")
    step.append(f"    {ct} z = {A(f_op, clipped('(gx[j] + gh[j])'))};")
    step.append(f"    {ct} rr = {A(f_op, clipped(f'(gx[{hid} + j] + gh[{hid} + j])'))};")
    if lbr:
        step.append(f"    hn[j] = gx[{2 * hid} + j] + rr * gh[{2 * hid} + j]; tmp[j] = z;")
    else:
        step.append("    tmp[j] = rr * hb[j]; hn[j] = z;")
    step.append("}")
    if not lbr:      # (r ⊙ h)·Rhᵀ + Rbh needs all of r first
        step += mv.recurrent("tmp", 2 * hid, hid, True)
        step.append(f"for (long j = 0; j < {hid}; j++) {{ {ct} z = hn[j]; "
                    f"{ct} hh = {A(g_op, clipped(f'(gx[{2 * hid} + j] + gh[{2 * hid} + j])'))}; "
                    f"hn[j] = hh + z * (hb[j] - hh); }}")
    else:
        step.append(f"for (long j = 0; j < {hid}; j++) {{ {ct} z = tmp[j]; "
                    f"{ct} hh = {A(g_op, clipped('hn[j]'))}; hn[j] = hh + z * (hb[j] - hh); }}")
    return step


def _lstm_step(mv: _Products, v: dict, P: str | None, acts, A, clipped) -> list[str]:
    """One LSTM step for one batch row (with peepholes ``P`` when given): the cell into cb, the
    output into hn."""
    hid, ct = v["hid"], v["ct"]
    f_op, g_op, h_op = acts[0], acts[1], acts[2]
    step = mv.recurrent("hb", 0, mv.gh_n, False)
    step.append(f"for (long j = 0; j < {hid}; j++) {{")
    pre = {k: clipped(f"(gx[{k * hid} + j] + gh[{k * hid} + j])") for k in range(4)}
    ipre, opre, fpre = pre[0], pre[1], pre[2]
    if P:
        ipre = f"({ipre} + cb[j] * ({ct})({P})[j])"
        fpre = f"({fpre} + cb[j] * ({ct})({P})[{2 * hid} + j])"
    step.append(f"    {ct} ig = {A(f_op, ipre)}; {ct} fg = {A(f_op, fpre)};")
    step.append(f"    {ct} cc = {A(g_op, pre[3])};")
    step.append(f"    {ct} C = fg * cb[j] + ig * cc;")
    step.append(f"    {ct} og = {A(f_op, f'({opre} + C * ({ct})({P})[{hid} + j])' if P else opre)};")
    step.append(f"    cb[j] = C; hn[j] = {A(h_op, 'C')} * og;")
    step.append("}")
    return step


def _direction(prog, node, d, forward, fast, acts, clipped, lines_ctx) -> str:
    """One direction: the initial state, every time step (each batch row: products, gates,
    the new state, Y), then Y_h and Y_c."""
    v = lines_ctx
    seq, batch, isz, hid, ndir, layout = (v[k] for k in ("seq", "batch", "isz", "hid", "ndir", "layout"))
    dt, ct = v["dt"], v["ct"]
    mv = _Products(prog, v, d, fast)

    def state_index(b):    # (ndir, batch, H) in layout 0, (batch, ndir, H) in layout 1
        return f"(({d} * {batch} + {b}) * {hid})" if layout == 0 else f"(({b} * {ndir} + {d}) * {hid})"
    out = []
    for name, buf in (("h0", "h"), ("c0", "c")):
        if v[name]:
            out.append(f"for (long b = 0; b < {batch}; b++) for (long j = 0; j < {hid}; j++) "
                       f"{buf}[b * {hid} + j] = ({ct}){prog.ptr(v[name])}[{state_index('b')} + j];")
        else:
            out.append(f"memset({buf}, 0, sizeof({ct}) * {batch * hid});")
    out.append(f"for (long step = 0; step < {seq}; step++) {{")
    out.append(f"    long t = {'step' if forward else f'{seq - 1} - step'};")
    out.append(f"    for (long b = 0; b < {batch}; b++) {{")
    xt = f"(t * {batch} + b) * {isz}" if layout == 0 else f"(b * {seq} + t) * {isz}"
    step = [f"const {storage(dt)} *xt = X + {xt}; {ct} *hb = h + b * {hid}; {ct} *cb = c + b * {hid}; (void)cb;"]
    step += mv.inputs()

    def A(op_attrs, val):
        return _act(fast, op_attrs[0], op_attrs[1], val, dt)
    if v["gates"] == 3:
        step += _gru_step(mv, v, acts, A, clipped)
    else:
        step += _lstm_step(mv, v, prog.ptr(v["p"]) + f" + {d * 3 * hid}" if v["p"] else None, acts, A, clipped)
    step.append(f"for (long j = 0; j < {hid}; j++) hb[j] = hn[j];")
    if v["y"]:
        yi = f"((t * {ndir} + {d}) * {batch} + b) * {hid}" if layout == 0 else f"((b * {seq} + t) * {ndir} + {d}) * {hid}"
        step.append(f"for (long j = 0; j < {hid}; j++) {prog.ptr(v['y'])}[{yi} + j] = ({storage(dt)})hb[j];")
    out.append(indent("\n".join(step), 8))
    out.append("    }")
    out.append("}")
    for name, buf in (("yh", "h"), ("yc", "c")):
        if v[name]:
            out.append(f"for (long b = 0; b < {batch}; b++) for (long j = 0; j < {hid}; j++) "
                       f"{prog.ptr(v[name])}[{state_index('b')} + j] = ({storage(dt)}){buf}[b * {hid} + j];")
    return "\n".join(out)
