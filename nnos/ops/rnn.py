"""GRU and LSTM (ONNX layouts 0 and 1, forward/reverse/bidirectional, peepholes, clip,
linear_before_reset, the activation functions nnos implements elementwise).

Per call: one matmul projects every time step's input at once; then per step one matmul with
the recurrence weights and in-place gate arithmetic on views prepared at bind time.
"""
from __future__ import annotations

import numpy as np

from ..ir import Node, TensorType
from .linalg import product
from .registry import OPS, call, full_shape, is_const, register, scalar

_ACTS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "leakyrelu": "LeakyRelu",
         "hardsigmoid": "HardSigmoid", "elu": "Elu", "softplus": "Softplus"}
_ALPHA = {"LeakyRelu", "HardSigmoid", "Elu"}
_BETA = {"HardSigmoid"}


def _spec(node):
    gates = 3 if node.op == "GRU" else 4
    direction = node.attrs.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise node.fail(f"unknown direction {direction!r}")
    if int(node.attrs.get("input_forget", 0)):
        raise node.fail("input_forget=1 is not supported")
    ndir = 2 if direction == "bidirectional" else 1
    names = node.attrs.get("activations") or (["Sigmoid", "Tanh"] if gates == 3 else ["Sigmoid", "Tanh", "Tanh"]) * ndir
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    per = len(names) // ndir
    alphas = list(node.attrs.get("activation_alpha", []))
    betas = list(node.attrs.get("activation_beta", []))
    acts = []
    for n in names:
        op = _ACTS.get(n.lower())
        if op is None:
            raise node.fail(f"activation {n!r} is not supported; supported: {', '.join(_ACTS.values())}")
        attrs = {}
        if op in _ALPHA and alphas:
            attrs["alpha"] = float(alphas.pop(0))
        if op in _BETA and betas:
            attrs["beta"] = float(betas.pop(0))
        acts.append((op, attrs))
    return gates, direction, ndir, [acts[d * per:(d + 1) * per] for d in range(ndir)]


def split_bias(b: np.ndarray, gates: int, hid: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """One direction's ONNX bias [Wb | Rb] (2·G·H values) as (bw, br): ``bw`` is added to W·x —
    Wb with Rb joined for every gate where the two simply add (all of LSTM's, GRU's z and r);
    ``br`` is what stays with R·h (GRU's h gate, which the reset gate touches; zeros elsewhere).
    Every backend packs biases with this."""
    gh = gates * hid
    both = gh if gates == 4 else 2 * hid
    bw = np.array(b[:gh], dtype=dtype)
    bw[:both] += b[gh:gh + both]
    br = np.zeros(gh, dtype)
    if gates == 3:
        br[2 * hid:] = b[gh + 2 * hid:]
    return bw, br


def _infer_rnn(node, in_types, consts):
    gates, direction, ndir, _ = _spec(node)
    x, w, r = in_types[:3]
    layout = int(node.attrs.get("layout", 0))
    seq, batch = (x.shape[0], x.shape[1]) if layout == 0 else (x.shape[1], x.shape[0])
    hidden = int(node.attrs.get("hidden_size", w.shape[1] // gates))
    if w.shape != (ndir, gates * hidden, x.shape[2]) or r.shape != (ndir, gates * hidden, hidden):
        raise node.fail(f"W {w} / R {r} do not match {ndir} direction(s), hidden {hidden}, input {x}")
    if len(in_types) > 4 and in_types[4] is not None:
        lens = consts[4]
        if lens is None or np.any(np.asarray(lens) != seq):
            raise node.fail("sequence_lens must be a constant equal to the sequence length; "
                            "per-batch lengths make the step count data-dependent")
    y = (seq, ndir, batch, hidden) if layout == 0 else (batch, seq, ndir, hidden)
    h = (ndir, batch, hidden) if layout == 0 else (batch, ndir, hidden)
    types = [TensorType(x.dtype, y), TensorType(x.dtype, h), TensorType(x.dtype, h)]
    return types[:len(node.outputs)]


def _rnn_scratch(node, in_types, out_types):
    gates, _, ndir, _ = _spec(node)
    x, w = in_types[0], in_types[1]
    layout = int(node.attrs.get("layout", 0))
    seq, batch = (x.shape[0], x.shape[1]) if layout == 0 else (x.shape[1], x.shape[0])
    hidden = w.shape[1] // gates
    t = lambda *s: (TensorType(x.dtype, s), False)   # noqa: E731
    return [t(seq, batch, x.shape[2]),                 # input in (seq, batch, input) order
            t(ndir, seq, batch, gates * hidden),      # projected inputs + both biases
            t(batch, gates * hidden),                 # recurrent projection
            t(seq, ndir, batch, hidden),              # hidden states
            t(ndir, batch, hidden),                   # cell state (LSTM) / temp (GRU)
            t(batch, hidden), t(batch, hidden),       # temporaries
            t(batch, 2 * hidden), t(batch, 2 * hidden)]  # GRU: z|r side by side, activation temp


def _act(op, attrs, a, tmp):
    return OPS[op].bind(Node(op, op, [], [], attrs), [a], [a], [tmp])


def _clip(a, lim):
    if lim is None:
        return []
    return [call(np.minimum, a, scalar(lim, a.dtype), out=a), call(np.maximum, a, scalar(-float(lim), a.dtype), out=a)]


def _pack(w, r, b, d: int, gates: int, hid: int, dtype, f_act):
    """One direction's weights as the steps read them: (Wᵀ, Rᵀ, the combined constant bias or
    None, Rh's bias or None, half). Constant weights are packed once: transposed contiguous,
    biases combined (split_bias), and for sigmoid gates z|r prescaled by 1/2 (``half``) so that
    sigmoid(v) = tanh(v/2)/2 + 1/2 costs 3 calls."""
    packed = is_const(w) and is_const(r) and (b is None or is_const(b))
    half = packed and gates == 3 and f_act == ("Sigmoid", {})
    wt, rt = w[d].T, r[d].T                                   # (input, G*H), (H, G*H)
    bias = None
    rbh = b[d, gates * hid + 2 * hid:] if b is not None and gates == 3 else None
    if packed:
        wt, rt = np.array(wt, order="C"), np.array(rt, order="C")
        if b is not None:
            bias = split_bias(b[d], gates, hid, dtype)[0]
        if half:
            wt[:, :2 * hid] *= 0.5
            rt[:, :2 * hid] *= 0.5
            if bias is not None:
                bias[:2 * hid] *= 0.5
    return wt, rt, bias, rbh, half


def _project(xs2, wt, pd, bias, b, d: int, gates: int, hid: int) -> list:
    """pd = X·Wᵀ + biases for every time step at once."""
    out = [product(xs2, wt, pd)]
    if bias is not None:                  # constant: expanded to every time step once
        out.append(call(np.add, pd, np.array(np.broadcast_to(bias, pd.shape)), pd))
    elif b is not None:                  # biases are run-time inputs: add them every call
        wb, rb = b[d, :gates * hid], b[d, gates * hid:]
        out.append(call(np.add, pd, wb, pd))
        zr_part = pd[:, :(4 if gates == 4 else 2) * hid]
        out.append(call(np.add, zr_part, rb[:zr_part.shape[1]], zr_part))
    return out


def _forward(direction: str, d: int) -> bool:
    return direction == "forward" or (direction == "bidirectional" and d == 0)


def _bind_rnn(node, ins, outs, scratch):
    gates, direction, ndir, acts = _spec(node)
    x, w, r = ins[:3]
    b, h0, c0, p = (ins[k] if len(ins) > k else None for k in (3, 5, 6, 7))
    xs, proj, rec, hs, cell, t1, t2, zr, zr_tmp = scratch
    layout = int(node.attrs.get("layout", 0))
    seq, batch, hid = xs.shape[0], xs.shape[1], hs.shape[3]
    lbr = int(node.attrs.get("linear_before_reset", 0))
    clip = node.attrs.get("clip")
    lim = scalar(clip, x.dtype) if clip is not None else None
    if layout == 1:
        h0 = h0.transpose(1, 0, 2) if h0 is not None else None
        c0 = c0.transpose(1, 0, 2) if c0 is not None else None
        xs2, pre = xs.reshape(seq * batch, -1), [call(np.copyto, xs, x.transpose(1, 0, 2))]
    else:
        xs2, pre = x.reshape(seq * batch, -1), []
    y, yh, yc = (outs[k] if len(outs) > k else None for k in range(3))
    yh_v = None if yh is None else (yh if layout == 0 else yh.transpose(1, 0, 2))
    steps = []
    for d in range(ndir):
        wt, rt, bias, rbh, half = _pack(w, r, b, d, gates, hid, x.dtype, acts[d][0])
        pre += _project(xs2, wt, proj[d].reshape(seq * batch, -1), bias, b, d, gates, hid)
        order = list(range(seq)) if _forward(direction, d) else list(range(seq - 1, -1, -1))
        init_h = h0[d] if h0 is not None else np.zeros((batch, hid), x.dtype)
        c = cell[d]
        if gates == 4:
            pre.append(call(np.copyto, c, c0[d]) if c0 is not None else call(np.copyto, c, scalar(0, x.dtype)))
        for k, ti in enumerate(order):
            h_prev = hs[order[k - 1], d] if k else init_h
            last = k == len(order) - 1
            h_new = yh_v[d] if (last and y is None and yh_v is not None) else hs[ti, d]
            if gates == 3:
                steps.append(_gru_step(proj[d, ti], h_prev, h_new, rt, rec, zr, zr_tmp, hid, lbr, rbh,
                                       acts[d], lim, half))
            else:
                steps.append(_lstm_step(proj[d, ti], h_prev, h_new, c, rt, rec, t1, hid,
                                        p[d] if p is not None else None, acts[d], lim))
    post = []
    if y is not None:
        post.append(call(np.copyto, y, hs if layout == 0 else hs.transpose(2, 0, 1, 3)))
    if yh is not None and y is not None:
        post += [call(np.copyto, yh_v[d], hs[seq - 1 if _forward(direction, d) else 0, d]) for d in range(ndir)]
    if yc is not None:
        post.append(call(np.copyto, yc if layout == 0 else yc.transpose(1, 0, 2), cell))
    return pre + steps + post


def _gru_step(g, h_prev, h_new, rt, rec, zr, tmp, hid, lbr, rbh, acts, lim, half):
    """One GRU step. ``g`` holds X W^T + Wb (+ Rb for z and r); ``rbh`` is Rh's bias.
    z and r sit side by side in ``zr`` so one activation call covers both."""
    z, r = zr[:, :hid], zr[:, hid:]
    rec_h, g_zr, g_h, rec_zr = rec[:, 2 * hid:], g[:, :2 * hid], g[:, 2 * hid:], rec[:, :2 * hid]
    if rbh is not None and is_const(rbh):
        rbh = full_shape(rbh, h_new.shape)[0]      # same shape as what it is added to
    if half:     # inputs were prescaled by 1/2 (a clip limit scales with them)
        h = scalar(0.5, zr.dtype)
        gate = [_clip(zr, 0.5 * float(lim) if lim is not None else None), call(np.tanh, zr, zr),
                call(np.multiply, zr, h, zr), call(np.add, zr, h, zr)]
    else:
        gate = [_clip(zr, lim), _act(*acts[0], zr, tmp)]
    program = [product(h_prev, rt, rec),                   # (B, 3H): z, r, h recurrences
               call(np.add, g_zr, rec_zr, zr), gate]
    if lbr:                                                # h~ = g(Xh + r * (H Rh^T + Rbh))
        if rbh is not None:
            program.append(call(np.add, rec_h, rbh, rec_h))
        program.append(call(np.multiply, r, rec_h, h_new))
    else:                                                  # h~ = g(Xh + (r * H) Rh^T + Rbh)
        program += [call(np.multiply, r, h_prev, r), product(r, rt[:, 2 * hid:], h_new)]
        if rbh is not None:
            program.append(call(np.add, h_new, rbh, h_new))
    program += [call(np.add, h_new, g_h, h_new), _clip(h_new, lim), _act(*acts[1], h_new, tmp[:, :hid]),
                call(np.subtract, h_prev, h_new, r),       # H = h~ + z * (H_prev - h~)
                call(np.multiply, r, z, r), call(np.add, h_new, r, h_new)]
    return program


def _lstm_step(g, h_prev, h_new, c, rt, rec, tmp, hid, p, acts, lim):
    f_act, g_act, h_act = acts
    i_, o_, f_, c_ = (rec[:, k * hid:(k + 1) * hid] for k in range(4))
    program = [product(h_prev, rt, rec), call(np.add, rec, g, rec), _clip(rec, lim)]
    if p is not None:                                      # peepholes on the previous cell state
        pi, po, pf = p[:hid], p[hid:2 * hid], p[2 * hid:]
        program += [call(np.multiply, c, pi, tmp), call(np.add, i_, tmp, i_),
                    call(np.multiply, c, pf, tmp), call(np.add, f_, tmp, f_)]
    if p is None:            # i, o, f side by side: one activation over all three
        iof = rec[:, :3 * hid]
        program.append(_act(*f_act, iof, np.empty_like(iof)))
    else:
        program += [_act(*f_act, i_, tmp), _act(*f_act, f_, tmp)]
    program += [_act(*g_act, c_, tmp),
                call(np.multiply, c, f_, c),               # C = f * C_prev + i * c~
                call(np.multiply, i_, c_, tmp), call(np.add, c, tmp, c)]
    if p is not None:
        program += [call(np.multiply, c, po, tmp), call(np.add, o_, tmp, o_), _act(*f_act, o_, tmp)]
    program += [call(np.copyto, h_new, c), _act(*h_act, h_new, tmp), call(np.multiply, h_new, o_, h_new)]
    return program


def _rnn_flops(node, in_types, out_types):
    x, w, r = in_types[:3]
    seq = x.shape[0] if int(node.attrs.get("layout", 0)) == 0 else x.shape[1]
    batch = x.size // (seq * x.shape[2])
    return 2 * seq * batch * (int(np.prod(w.shape)) + int(np.prod(r.shape)))


for _name in ("GRU", "LSTM"):
    register(_name, _infer_rnn, _bind_rnn, scratch=_rnn_scratch, flops=_rnn_flops, const_inputs=(4,))
