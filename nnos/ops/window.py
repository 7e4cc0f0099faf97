"""Geometry shared by convolution and pooling: pads, output sizes, strided window views."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def spatial_attrs(node, rank, kernel):
    strides = [int(s) for s in node.attrs.get("strides", [1] * rank)]
    dilations = [int(d) for d in node.attrs.get("dilations", [1] * rank)]
    if len(strides) != rank or len(dilations) != rank or len(kernel) != rank:
        raise node.fail(f"kernel {kernel}, strides {strides}, dilations {dilations} must each have {rank} entries")
    if min(strides + dilations + list(kernel), default=1) < 1:
        raise node.fail(f"kernel {kernel}, strides {strides} and dilations {dilations} must be positive")
    return strides, dilations


def pads_and_out(node, in_sizes, kernel, strides, dilations, ceil_mode=False):
    """Begin/end pads and output sizes per spatial axis, following ONNX's auto_pad rules."""
    rank = len(in_sizes)
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_sizes, strides)]
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, eff, in_sizes)]
        small = [t // 2 for t in total]
        begin = small if auto == "SAME_UPPER" else [t - h for t, h in zip(total, small)]
        end = [t - b for t, b in zip(total, begin)]
        return begin, end, out
    if auto == "VALID":
        begin, end = [0] * rank, [0] * rank
    elif auto == "NOTSET":
        pads = [int(p) for p in node.attrs.get("pads", [0] * (2 * rank))]
        if len(pads) != 2 * rank or min(pads, default=0) < 0:
            raise node.fail(f"pads {pads} must be {2 * rank} non-negative integers")
        begin, end = pads[:rank], pads[rank:]
    else:
        raise node.fail(f"unknown auto_pad {auto!r}")
    out = []
    for i, b, e, k, s in zip(in_sizes, begin, end, eff, strides):
        span = i + b + e - k
        if span < 0:
            raise node.fail(f"kernel extent {k} is larger than the padded input {i + b + e}")
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= i + b:   # the last window must start inside input or begin pad
            o -= 1
        out.append(o)
    return begin, end, out


def window_view(buf, lead, kernel, out, strides, dilations, offset=None):
    """A view of ``buf`` (lead dims + padded spatial dims) shaped lead + kernel + out.

    With ``offset`` (a kernel position) the view is lead + out: that one tap of every window."""
    rank = len(kernel)
    sp_strides = buf.strides[len(lead):]
    lead_strides = buf.strides[:len(lead)]
    win = tuple(st * d for st, d in zip(sp_strides, dilations))
    step = tuple(st * s for st, s in zip(sp_strides, strides))
    if offset is None:
        return as_strided(buf, shape=tuple(lead) + tuple(kernel) + tuple(out),
                          strides=lead_strides + win + step, writeable=False)
    start = buf[(slice(None),) * len(lead) + tuple(o * d for o, d in zip(offset, dilations))]
    assert rank == len(offset)
    return as_strided(start, shape=tuple(lead) + tuple(out), strides=lead_strides + step, writeable=False)


def kernel_offsets(kernel):
    return list(np.ndindex(*kernel))
