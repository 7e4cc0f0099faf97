"""MaxPool, AveragePool (pads, strides, dilations, ceil_mode, count_include_pad) and
GlobalAveragePool. Windows are visited tap by tap: one elementwise max/add per kernel position
over strided views of a padded buffer kept across calls."""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import call, register
from .window import kernel_offsets, pads_and_out, spatial_attrs, window_view


def _geometry(node, x_shape):
    rank = len(x_shape) - 2
    if rank < 1:
        raise node.fail(f"input must have spatial dims, got shape {list(x_shape)}")
    kernel = [int(k) for k in node.attrs["kernel_shape"]]
    strides, dilations = spatial_attrs(node, rank, kernel)
    ceil = bool(node.attrs.get("ceil_mode", 0))
    begin, end, out = pads_and_out(node, list(x_shape[2:]), kernel, strides, dilations, ceil)
    # extra zeros/-inf beyond the end pad so that ceil_mode's last window fits
    need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out, strides, kernel, dilations)]
    padded = [max(n, i + b + e) for n, i, b, e in zip(need, x_shape[2:], begin, end)]
    return kernel, strides, dilations, begin, end, out, padded


def _infer_pool(node, in_types, consts):
    x = in_types[0]
    if len(node.outputs) > 1 and node.outputs[1]:
        raise node.fail("the Indices output of MaxPool is not supported")
    out = _geometry(node, x.shape)[5]
    return [TensorType(x.dtype, x.shape[:2] + tuple(out))]


def _pool_scratch(node, in_types, out_types):
    x = in_types[0]
    padded = _geometry(node, x.shape)[6]
    if list(padded) == list(x.shape[2:]):
        return []
    return [(TensorType(x.dtype, x.shape[:2] + tuple(padded)), True)]


def _lowest(dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _bind_pool(node, ins, outs, scratch, is_max):
    x, y = ins[0], outs[0]
    kernel, strides, dilations, begin, end, out, padded = _geometry(node, x.shape)
    lead = x.shape[:2]
    src, fill = x, None
    if scratch:
        src = scratch[0]
        src[...] = _lowest(x.dtype) if is_max else 0     # borders, once, at bind time
        interior = (slice(None), slice(None)) + tuple(slice(b, b + i) for b, i in zip(begin, x.shape[2:]))
        fill = src[interior]
    taps = [window_view(src, lead, kernel, out, strides, dilations, offset=o) for o in kernel_offsets(kernel)]
    combine = np.maximum if is_max else np.add
    first, rest = taps[0], taps[1:]
    inv = None if is_max else np.array(np.broadcast_to(
        _inverse_counts(node, x.shape, kernel, strides, dilations, begin, out, padded, x.dtype), y.shape))

    return ([call(np.copyto, fill, x)] if fill is not None else []) + [call(np.copyto, y, first)] + \
        [call(combine, y, t, out=y) for t in rest] + ([call(np.multiply, y, inv, y)] if inv is not None else [])


def _inverse_counts(node, x_shape, kernel, strides, dilations, begin, out, padded, dtype):
    """1 / (number of counted positions) per output position, computed once at bind time."""
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    mask = np.zeros((1, 1) + tuple(padded), dtype=np.float64)
    if include_pad:
        _, end, _ = pads_and_out(node, list(x_shape[2:]), kernel, strides, dilations)
        region = tuple(slice(0, i + b + e) for i, b, e in zip(x_shape[2:], begin, end))
    else:
        region = tuple(slice(b, b + i) for b, i in zip(begin, x_shape[2:]))
    mask[(0, 0) + region] = 1
    counts = sum(window_view(mask, (1, 1), kernel, out, strides, dilations, offset=o)
                 for o in kernel_offsets(kernel))
    return (1.0 / np.maximum(counts, 1)).astype(dtype)


def _pool_flops(node, in_types, out_types):
    return out_types[0].size * int(np.prod(node.attrs["kernel_shape"]))


register("MaxPool", _infer_pool, lambda n, i, o, s: _bind_pool(n, i, o, s, True),
         scratch=_pool_scratch, flops=_pool_flops)
register("AveragePool", _infer_pool, lambda n, i, o, s: _bind_pool(n, i, o, s, False),
         scratch=_pool_scratch, flops=_pool_flops)


def _infer_global(node, in_types, consts):
    x = in_types[0]
    if len(x.shape) < 3:
        raise node.fail(f"input must have spatial dims, got {x}")
    return [TensorType(x.dtype, x.shape[:2] + (1,) * (len(x.shape) - 2))]


def _bind_global_average(node, ins, outs, scratch):
    x, y = ins[0], outs[0]
    x3, y2 = x.reshape(x.shape[0], x.shape[1], -1), y.reshape(y.shape[0], y.shape[1])
    inv = np.array(1.0 / x3.shape[2], dtype=x.dtype)
    return [call(np.add.reduce, x3, axis=2, out=y2), call(np.multiply, y2, inv, y2)]


register("GlobalAveragePool", _infer_global, _bind_global_average, flops=lambda n, i, o: i[0].size)
