"""Ops that move or reshape data without arithmetic: Reshape and friends, Transpose, Concat,
Split, Slice, Gather, Expand, Shape, Constant, ConstantOfShape, Identity, Range, Pad.

Inputs that define a shape (Reshape's shape, Slice's starts, ...) must be constants by the
time types are inferred; a value known only at run time is a dynamic shape, refused.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from ..limits import tensor_problem
from .registry import call, register


def _axis(node, axis, rank):
    if not -rank <= axis < rank:
        raise node.fail(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _const_ints(node, consts, i, what):
    v = consts[i] if i < len(consts) else None
    if v is None:
        raise node.fail(f"{what} (input {i}) must be a constant known at compile time; "
                        f"it is computed at run time, which would make shapes dynamic")
    return [int(x) for x in np.asarray(v).reshape(-1)]


def _bind_copy_as(node, ins, outs, scratch):
    return call(np.copyto, outs[0], ins[0].reshape(outs[0].shape))


def _view_op(name, infer, const_inputs=()):
    register(name, infer, _bind_copy_as, flops=lambda n, i, o: 0, const_inputs=const_inputs, view=True)


# --- views -----------------------------------------------------------------------------------
def _infer_reshape(node, in_types, consts):
    x = in_types[0]
    shape = _const_ints(node, consts, 1, "shape")
    allowzero = int(node.attrs.get("allowzero", 0))
    out = [x.shape[i] if (s == 0 and not allowzero) else s for i, s in enumerate(shape)]
    if out.count(-1) > 1:
        raise node.fail(f"shape {shape} has more than one -1")
    if -1 in out:
        known = int(np.prod([s for s in out if s != -1], dtype=np.int64))
        if known == 0 or x.size % known:
            raise node.fail(f"cannot reshape {x} to {shape}")
        out[out.index(-1)] = x.size // known
    if int(np.prod(out, dtype=np.int64)) != x.size:
        raise node.fail(f"cannot reshape {x} ({x.size} elements) to {out}")
    return [TensorType(x.dtype, tuple(out))]


def _infer_flatten(node, in_types, consts):
    x = in_types[0]
    axis = int(node.attrs.get("axis", 1))
    axis = axis if axis == len(x.shape) else _axis(node, axis, max(len(x.shape), 1))
    left = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [TensorType(x.dtype, (left, x.size // left if left else 0))]


def _squeeze_axes(node, in_types, consts):
    x = in_types[0]
    if len(consts) > 1 and consts[1] is not None:
        return sorted(_axis(node, a, len(x.shape)) for a in _const_ints(node, consts, 1, "axes"))
    if len(in_types) > 1 and in_types[1] is not None:
        _const_ints(node, consts, 1, "axes")
    return [i for i, s in enumerate(x.shape) if s == 1]


def _infer_squeeze(node, in_types, consts):
    x = in_types[0]
    axes = _squeeze_axes(node, in_types, consts)
    for a in axes:
        if x.shape[a] != 1:
            raise node.fail(f"cannot squeeze axis {a} of {x}: its size is not 1")
    return [TensorType(x.dtype, tuple(s for i, s in enumerate(x.shape) if i not in axes))]


def _infer_unsqueeze(node, in_types, consts):
    x = in_types[0]
    axes = _const_ints(node, consts, 1, "axes")
    rank = len(x.shape) + len(axes)
    axes = sorted(_axis(node, a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise node.fail(f"repeated axes {axes}")
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [TensorType(x.dtype, tuple(shape))]


def _infer_identity(node, in_types, consts):
    return [in_types[0]]


_view_op("Reshape", _infer_reshape, const_inputs=(1,))
_view_op("Flatten", _infer_flatten)
_view_op("Squeeze", _infer_squeeze, const_inputs=(1,))
_view_op("Unsqueeze", _infer_unsqueeze, const_inputs=(1,))
_view_op("Identity", _infer_identity)


# --- Transpose, Expand -------------------------------------------------------------------------
def _perm(node, rank):
    perm = node.attrs.get("perm")
    perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    if sorted(perm) != list(range(rank)):
        raise node.fail(f"perm {perm} is not a permutation of {rank} axes")
    return perm


def _infer_transpose(node, in_types, consts):
    x = in_types[0]
    return [TensorType(x.dtype, tuple(x.shape[p] for p in _perm(node, len(x.shape))))]


def _bind_transpose(node, ins, outs, scratch):
    return call(np.copyto, outs[0], ins[0].transpose(_perm(node, ins[0].ndim)))


register("Transpose", _infer_transpose, _bind_transpose, flops=lambda n, i, o: 0)


def _infer_expand(node, in_types, consts):
    x = in_types[0]
    shape = _const_ints(node, consts, 1, "shape")
    try:
        out = np.broadcast_shapes(x.shape, tuple(shape))
    except ValueError as e:
        raise node.fail(f"cannot expand {x} to {shape}") from e
    return [TensorType(x.dtype, tuple(out))]


def _bind_expand(node, ins, outs, scratch):
    return call(np.copyto, outs[0], ins[0])


register("Expand", _infer_expand, _bind_expand, flops=lambda n, i, o: 0, const_inputs=(1,))


# --- Concat, Split, Slice, Gather ---------------------------------------------------------------
def _infer_concat(node, in_types, consts):
    xs = [t for t in in_types if t is not None]
    rank = len(xs[0].shape)
    axis = _axis(node, int(node.attrs["axis"]), rank)
    for t in xs[1:]:
        if len(t.shape) != rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, xs[0].shape)) if i != axis) \
                or t.dtype != xs[0].dtype:
            raise node.fail(f"inputs do not concatenate on axis {axis}: {', '.join(map(str, xs))}")
    shape = list(xs[0].shape)
    shape[axis] = sum(t.shape[axis] for t in xs)
    return [TensorType(xs[0].dtype, tuple(shape))]


def _bind_concat(node, ins, outs, scratch):
    o = outs[0]
    axis = int(node.attrs["axis"]) % o.ndim
    pairs, start = [], 0
    for x in ins:
        if x is None:
            continue
        idx = (slice(None),) * axis + (slice(start, start + x.shape[axis]),)
        pairs.append(call(np.copyto, o[idx], x))
        start += x.shape[axis]
    return pairs


register("Concat", _infer_concat, _bind_concat, flops=lambda n, i, o: 0)


def _split_sizes(node, in_types, consts):
    x = in_types[0]
    axis = _axis(node, int(node.attrs.get("axis", 0)), len(x.shape))
    dim, n = x.shape[axis], len(node.outputs)
    if len(in_types) > 1 and in_types[1] is not None:
        sizes = _const_ints(node, consts, 1, "split")
    elif "split" in node.attrs:
        sizes = [int(s) for s in node.attrs["split"]]
    else:
        n = int(node.attrs.get("num_outputs", n))
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    if sum(sizes) != dim or len(sizes) != len(node.outputs):
        raise node.fail(f"split sizes {sizes} do not divide axis {axis} of {x} into {len(node.outputs)} outputs")
    return axis, sizes


def _infer_split(node, in_types, consts):
    x = in_types[0]
    axis, sizes = _split_sizes(node, in_types, consts)
    return [TensorType(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


def _bind_split(node, ins, outs, scratch):
    x = ins[0]
    axis = int(node.attrs.get("axis", 0)) % x.ndim
    pairs, start = [], 0
    for o in outs:
        idx = (slice(None),) * axis + (slice(start, start + o.shape[axis]),)
        pairs.append(call(np.copyto, o, x[idx]))
        start += o.shape[axis]
    return pairs


register("Split", _infer_split, _bind_split, flops=lambda n, i, o: 0, const_inputs=(1,))


def _slices(node, shape, consts):
    starts = _const_ints(node, consts, 1, "starts")
    ends = _const_ints(node, consts, 2, "ends")
    rank = len(shape)
    axes = _const_ints(node, consts, 3, "axes") if len(consts) > 3 and consts[3] is not None else list(range(len(starts)))
    steps = _const_ints(node, consts, 4, "steps") if len(consts) > 4 and consts[4] is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise node.fail(f"starts/ends/axes/steps differ in length: {starts}, {ends}, {axes}, {steps}")
    index = [slice(None)] * rank
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise node.fail("a slice step of 0 is invalid")
        index[_axis(node, a, rank)] = slice(s, e, st)   # ONNX clamping rules are numpy's
    return tuple(index)


def _infer_slice(node, in_types, consts):
    x = in_types[0]
    shape = np.empty(x.shape, dtype=np.bool_)[_slices(node, x.shape, consts)].shape
    return [TensorType(x.dtype, tuple(shape))]


def _bind_slice(node, ins, outs, scratch):
    return call(np.copyto, outs[0], ins[0][_slices(node, ins[0].shape, ins)])


register("Slice", _infer_slice, _bind_slice, flops=lambda n, i, o: 0, const_inputs=(1, 2, 3, 4))


def _infer_gather(node, in_types, consts):
    x, idx = in_types[0], in_types[1]
    if idx.dtype.kind not in "iu":
        raise node.fail(f"indices must be integers, got {idx}")
    axis = _axis(node, int(node.attrs.get("axis", 0)), len(x.shape))
    if consts[1] is not None:
        v = np.asarray(consts[1])
        if v.size and (v.max() >= x.shape[axis] or v.min() < -x.shape[axis]):
            raise node.fail(f"indices {v.reshape(-1).tolist()} out of range for axis {axis} of {x}")
    return [TensorType(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])]


def _bind_gather(node, ins, outs, scratch):
    x, idx, o = ins[0], ins[1], outs[0]
    axis = int(node.attrs.get("axis", 0)) % x.ndim
    # mode="wrap" maps negative indices like ONNX does and, unlike "raise", never buffers.
    return call(np.take, x, idx, axis=axis, out=o, mode="wrap")


register("Gather", _infer_gather, _bind_gather, flops=lambda n, i, o: 0)


# --- Shape, Constant, ConstantOfShape -----------------------------------------------------------
def _shape_value(node, x):
    rank = len(x.shape)
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    return np.array(x.shape[slice(start, rank if end is None else int(end))], dtype=np.int64)


def _infer_shape(node, in_types, consts):
    return [TensorType(np.dtype(np.int64), _shape_value(node, in_types[0]).shape)]


def _bind_shape(node, ins, outs, scratch):
    return call(np.copyto, outs[0], _shape_value(node, ins[0]))


register("Shape", _infer_shape, _bind_shape, flops=lambda n, i, o: 0)


def _infer_constant(node, in_types, consts):
    v = node.attrs["value"]
    return [TensorType(v.dtype, tuple(v.shape))]


def _bind_constant(node, ins, outs, scratch):
    return call(np.copyto, outs[0], node.attrs["value"])


register("Constant", _infer_constant, _bind_constant, flops=lambda n, i, o: 0)


def _fill_value(node):
    v = node.attrs.get("value")
    return np.zeros((), np.float32) if v is None else np.asarray(v).reshape(())


def _infer_constant_of_shape(node, in_types, consts):
    shape = _const_ints(node, consts, 0, "shape")
    if any(s < 0 for s in shape):
        raise node.fail(f"negative dimension in {shape}")
    return [TensorType(_fill_value(node).dtype, tuple(shape))]


def _bind_constant_of_shape(node, ins, outs, scratch):
    return call(np.copyto, outs[0], _fill_value(node))


register("ConstantOfShape", _infer_constant_of_shape, _bind_constant_of_shape,
         flops=lambda n, i, o: 0, const_inputs=(0,))


# --- Range -----------------------------------------------------------------------------------------
def _range_length(node, consts) -> int:
    """max(ceil((limit − start) / delta), 0), checked against the tensor limits before anything
    that long is made (a constant Range to 2^40 is a refusal naming the node)."""
    start, limit, delta = _range_args(node, consts)
    n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    problem = tensor_problem((n,), start.dtype.itemsize)
    if problem:
        raise node.fail(f"Range({float(start):g}, {float(limit):g}, {float(delta):g}) on constants: {problem}")
    return n


def _range_values(node, consts) -> np.ndarray:
    """ONNX Range: the length's values start + i·delta, in start's dtype. Its inputs must be
    constants (the length is the output's shape)."""
    start, _, delta = _range_args(node, consts)
    return (start + np.arange(_range_length(node, consts), dtype=start.dtype) * delta).astype(start.dtype)


def _range_args(node, consts):
    vals = []
    for i, what in enumerate(("start", "limit", "delta")):
        v = consts[i] if i < len(consts) else None
        if v is None:
            raise node.fail(f"{what} (input {i}) must be a constant known at compile time; "
                            "computed at run time it would make the output's length dynamic")
        vals.append(np.asarray(v).reshape(()))
    if vals[2] == 0:
        raise node.fail("delta is 0: the range would never end")
    return vals


def _infer_range(node, in_types, consts):
    dts = {t.dtype for t in in_types}
    if len(dts) != 1:
        raise node.fail("start, limit and delta must share one dtype, got " + ", ".join(str(t) for t in in_types))
    return [TensorType(in_types[0].dtype, (_range_length(node, consts),))]


def _bind_range(node, ins, outs, scratch):
    return call(np.copyto, outs[0], _range_values(node, ins))


register("Range", _infer_range, _bind_range, flops=lambda n, i, o: 0, const_inputs=(0, 1, 2))


# --- Pad -------------------------------------------------------------------------------------------
PAD_MODES = ("constant", "reflect", "edge", "wrap")


def pad_geometry(node, shape, consts) -> tuple[list[int], list[int], str]:
    """(begin, end) per axis — negative: cropped — and the mode, from the constant pads (and
    axes) inputs."""
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in PAD_MODES:
        raise node.fail(f"mode {mode!r} is not one of {', '.join(PAD_MODES)}")
    pads = _const_ints(node, consts, 1, "pads")
    rank = len(shape)
    axes = _const_ints(node, consts, 3, "axes") if len(consts) > 3 and consts[3] is not None else list(range(rank))
    axes = [a % rank if -rank <= a < rank else None for a in axes]
    if None in axes or len(set(axes)) != len(axes) or len(pads) != 2 * len(axes):
        raise node.fail(f"pads {pads} and axes {axes} do not fit a rank-{rank} input (2 pads per axis)")
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + len(axes)]
    for a in range(rank):
        if shape[a] + begin[a] + end[a] < 0:
            raise node.fail(f"axis {a}: pads {begin[a]}, {end[a]} crop more than its {shape[a]} values")
        if mode != "constant" and (begin[a] > 0 or end[a] > 0) and shape[a] + min(begin[a], 0) + min(end[a], 0) <= 0:
            raise node.fail(f"axis {a}: {mode} padding of an empty axis")
    return begin, end, mode


def _infer_pad(node, in_types, consts):
    begin, end, _ = pad_geometry(node, in_types[0].shape, consts)
    return [TensorType(in_types[0].dtype, tuple(n + b + e for n, b, e in zip(in_types[0].shape, begin, end)))]


def _pad(node, x, value, begin, end, mode):
    crop = tuple(slice(max(-b, 0), x.shape[a] - max(-e, 0)) for a, (b, e) in enumerate(zip(begin, end)))
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        c = value.reshape(()) if value is not None and value.size else np.zeros((), x.dtype)
        return np.pad(x[crop], widths, mode="constant", constant_values=c)
    return np.pad(x[crop], widths, mode=mode)


def _bind_pad(node, ins, outs, scratch):
    begin, end, mode = pad_geometry(node, ins[0].shape, [None, ins[1], None, ins[3] if len(ins) > 3 else None])
    value = ins[2] if len(ins) > 2 else None

    def run(x, o, v):
        np.copyto(o, _pad(node, x, v, begin, end, mode))
    return call(run, ins[0], outs[0], value)


register("Pad", _infer_pad, _bind_pad, flops=lambda n, i, o: 0, const_inputs=(1, 3))
