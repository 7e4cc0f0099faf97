"""Convolution and transposed convolution, any number of spatial dims.

Conv: copy the input into a zero-bordered pad buffer (kept across calls), gather windows into
a column buffer (im2col) and multiply by the weights with one matmul per group. Depthwise
convolutions instead accumulate one multiply-add per kernel tap over all channels at once.
ConvTranspose: one matmul per group into columns, then scatter-add them (col2im).
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import call, full_shape, is_const, register
from .window import kernel_offsets, pads_and_out, spatial_attrs, window_view


def _geometry(node, x_shape, w_shape):
    rank = len(x_shape) - 2
    kernel = [int(k) for k in node.attrs.get("kernel_shape", w_shape[2:])]
    strides, dilations = spatial_attrs(node, rank, kernel)
    begin, end, out = pads_and_out(node, list(x_shape[2:]), kernel, strides, dilations)
    return kernel, strides, dilations, begin, end, out


def _infer_conv(node, in_types, consts):
    x, w = in_types[0], in_types[1]
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise node.fail(f"X {x} and W {w} must have the same rank, at least 3")
    g = int(node.attrs.get("group", 1))
    if x.shape[1] != w.shape[1] * g or w.shape[0] % g:
        raise node.fail(f"channels do not match: X {x}, W {w}, group {g}")
    if len(in_types) > 2 and in_types[2] is not None and in_types[2].shape != (w.shape[0],):
        raise node.fail(f"bias {in_types[2]} must have shape ({w.shape[0]},)")
    kernel, strides, dilations, begin, end, out = _geometry(node, x.shape, w.shape)
    return [TensorType(x.dtype, (x.shape[0], w.shape[0], *out))]


def _is_depthwise(node, x_shape, w_shape):
    g = int(node.attrs.get("group", 1))
    return g > 1 and g == x_shape[1] == w_shape[0]


def _needs_pad(begin, end):
    return any(begin) or any(end)


def _conv_scratch(node, in_types, out_types):
    x, w, y = in_types[0], in_types[1], out_types[0]
    kernel, strides, dilations, begin, end, out = _geometry(node, x.shape, w.shape)
    scratch = []
    if _needs_pad(begin, end):
        padded = tuple(i + b + e for i, b, e in zip(x.shape[2:], begin, end))
        scratch.append((TensorType(x.dtype, (x.shape[1], *padded)), True))
    if _is_depthwise(node, x.shape, w.shape):
        scratch.append((TensorType(x.dtype, y.shape[1:]), False))
    else:
        cg = w.shape[1]
        bias_row = len(in_types) > 2 and in_types[2] is not None
        scratch.append((TensorType(x.dtype, (cg * int(np.prod(kernel)) + bias_row, int(np.prod(out)))), False))
    scratch.append((TensorType(x.dtype, y.shape), False))      # a run-time bias, broadcast
    return scratch


def _depthwise_steps(src, wd, yv, tv, kernel, out, strides, dilations) -> list:
    """One image's depthwise convolution: per kernel tap, its window times that tap's weight per
    channel, summed into ``yv`` (``tv``: the product before the sum)."""
    steps = []
    c = src.shape[0]
    for j, off in enumerate(kernel_offsets(kernel)):
        tap = window_view(src, (c,), kernel, out, strides, dilations, offset=off)
        wj = wd[:, j].reshape((wd.shape[0],) + (1,) * len(kernel))
        if is_const(wd):                    # run-time weights keep numpy's broadcasting
            wj = full_shape(wj, yv.shape)[0]
        if j == 0:
            steps.append((np.multiply, tap, wj, yv))
        else:
            steps.append((np.multiply, tap, wj, tv))
            steps.append((np.add, yv, tv, yv))
    return steps


def _bind_conv(node, ins, outs, scratch):
    x, w, y = ins[0], ins[1], outs[0]
    b = ins[2] if len(ins) > 2 else None
    kernel, strides, dilations, begin, end, out = _geometry(node, x.shape, w.shape)
    n, c = x.shape[:2]
    m = w.shape[0]
    g = int(node.attrs.get("group", 1))
    pad = scratch[0] if _needs_pad(begin, end) else None
    work, bias_full = scratch[-2], scratch[-1]
    interior = (slice(None),) + tuple(slice(bg, bg + i) for bg, i in zip(begin, x.shape[2:]))
    depthwise = _is_depthwise(node, x.shape, w.shape)
    cg, mg = c // g, m // g
    pointwise = all(k == 1 for k in kernel) and all(s == 1 for s in strides) and pad is None
    # A constant bias rides in the product: the weights get a bias column, the columns a row of
    # ones. Otherwise the bias is added at the output's full shape (never numpy's broadcasting).
    fold_bias = b is not None and not depthwise and not pointwise and is_const(w) and is_const(b)
    wk = w.reshape(g, mg, -1)
    if fold_bias:
        wk = np.concatenate([wk, b.reshape(g, mg, 1)], axis=2)
        work_rows, ones = work[:-1], work[-1]
        steps = [(np.copyto, ones, np.ones(ones.shape, work.dtype))] if n else []
    elif b is not None:
        work_rows = work[:-1] if work.shape[0] == cg * int(np.prod(kernel)) + 1 else work
        steps = []
    else:
        work_rows, steps = work, []
    for i in range(n):
        src = x[i]
        if pad is not None:
            steps.append((np.copyto, pad[interior], x[i]))
            src = pad
        yi = y[i].reshape(m, -1)
        if depthwise:
            steps += _depthwise_steps(src, w.reshape(m, -1), y[i], work, kernel, out, strides, dilations)
            continue
        for gi in range(g):
            part = src[gi * cg:(gi + 1) * cg]
            if pointwise:
                col = part.reshape(cg, -1)
            else:
                view = window_view(part, (cg,), kernel, out, strides, dilations)
                steps.append((np.copyto, work_rows.reshape(view.shape), view))
                col = work if fold_bias else work_rows
            steps.append((np.dot, np.ascontiguousarray(wk[gi]) if fold_bias else wk[gi], col,
                          yi[gi * mg:(gi + 1) * mg]))
    if b is not None and not fold_bias:
        full, copy = full_shape(b.reshape((1, m) + (1,) * len(kernel)), y.shape, bias_full)
        if copy is not None:
            steps.append((np.copyto, copy.args[0], copy.args[1]))
        steps.append((np.add, y, full, y))
    return _runner(steps)


def _runner(steps):
    """Each step is (function, *args); ufuncs and matmul get their last array as out=."""
    return [call(f, *args) if f in (np.copyto, np.dot) else call(f, *args[:-1], out=args[-1]) for f, *args in steps]


def _conv_flops(node, in_types, out_types):
    w = in_types[1]
    return 2 * out_types[0].size * int(np.prod(w.shape[1:]))


register("Conv", _infer_conv, _bind_conv, scratch=_conv_scratch, flops=_conv_flops)


# --- ConvTranspose ---------------------------------------------------------------------------
def _tgeometry(node, x_shape, w_shape):
    rank = len(x_shape) - 2
    kernel = [int(k) for k in node.attrs.get("kernel_shape", w_shape[2:])]
    strides, dilations = spatial_attrs(node, rank, kernel)
    opad = [int(p) for p in node.attrs.get("output_padding", [0] * rank)]
    ins = list(x_shape[2:])
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(ins, strides, kernel, dilations)]
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if "output_shape" in node.attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        if "output_shape" in node.attrs:
            out = [int(o) for o in node.attrs["output_shape"]][-rank:]
        else:
            out = [i * s for i, s in zip(ins, strides)]
        total = [f + p - o for f, p, o in zip(full, opad, out)]   # negative: zeros beyond the extent
        if auto == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    else:
        pads = [int(p) for p in node.attrs.get("pads", [0] * (2 * rank))] if auto == "NOTSET" else [0] * 2 * rank
        begin, end = pads[:rank], pads[rank:]
        out = [f + p - b - e for f, p, b, e in zip(full, opad, begin, end)]
    if min(out) < 1:
        raise node.fail(f"output size {out} is not positive")
    return kernel, strides, dilations, opad, full, begin, out


def _infer_conv_transpose(node, in_types, consts):
    x, w = in_types[0], in_types[1]
    g = int(node.attrs.get("group", 1))
    if len(x.shape) < 3 or len(w.shape) != len(x.shape) or w.shape[0] != x.shape[1] or x.shape[1] % g:
        raise node.fail(f"X {x} and W {w} do not match (group {g})")
    out = _tgeometry(node, x.shape, w.shape)[-1]
    return [TensorType(x.dtype, (x.shape[0], w.shape[1] * g, *out))]


def _tscratch(node, in_types, out_types):
    x, w = in_types[0], in_types[1]
    kernel, strides, dilations, opad, full, begin, out = _tgeometry(node, x.shape, w.shape)
    g = int(node.attrs.get("group", 1))
    mg = w.shape[1]
    front = [max(0, -b) for b in begin]
    ext = [fr + max(f + p, b + o) for fr, f, p, b, o in zip(front, full, opad, begin, out)]
    return [(TensorType(x.dtype, (mg * int(np.prod(kernel)), int(np.prod(x.shape[2:])))), False),
            (TensorType(x.dtype, (mg * g, *ext)), False)]


def _bind_conv_transpose(node, ins, outs, scratch):
    x, w, y = ins[0], ins[1], outs[0]
    b = ins[2] if len(ins) > 2 else None
    kernel, strides, dilations, opad, full, begin, out = _tgeometry(node, x.shape, w.shape)
    g = int(node.attrs.get("group", 1))
    n, c = x.shape[:2]
    cg, mg = c // g, w.shape[1]
    col, acc = scratch
    zero = np.zeros((), acc.dtype)
    in_sp = x.shape[2:]
    col_k = col.reshape((mg, len(kernel_offsets(kernel))) + tuple(in_sp))
    wt = [w[gi * cg:(gi + 1) * cg].reshape(cg, -1).T for gi in range(g)]   # (mg*K, cg) views
    front = [max(0, -bg) for bg in begin]
    crop = (slice(None),) + tuple(slice(fr + bg, fr + bg + o) for fr, bg, o in zip(front, begin, out))
    steps = []
    for i in range(n):
        steps.append((np.copyto, acc, zero))
        for gi in range(g):
            xi = x[i, gi * cg:(gi + 1) * cg].reshape(cg, -1)
            steps.append((np.matmul, wt[gi], xi, col))
            accg = acc[gi * mg:(gi + 1) * mg]
            for j, off in enumerate(kernel_offsets(kernel)):
                idx = (slice(None),) + tuple(slice(fr + o * d, fr + o * d + (isz - 1) * s + 1, s)
                                             for fr, o, d, isz, s in zip(front, off, dilations, in_sp, strides))
                dst = accg[idx]
                steps.append((np.add, dst, col_k[:, j], dst))
        steps.append((np.copyto, y[i], acc[crop]))
    if b is not None:
        steps.append((np.add, y, b.reshape((1, -1) + (1,) * len(kernel)), y))
    return _runner(steps)


def _tflops(node, in_types, out_types):
    return 2 * in_types[0].size * int(np.prod(in_types[1].shape[1:]))


register("ConvTranspose", _infer_conv_transpose, _bind_conv_transpose, scratch=_tscratch, flops=_tflops)
