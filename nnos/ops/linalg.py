"""Matrix products: Gemm and MatMul (numpy's matmul with out=, which calls BLAS)."""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .registry import broadcast_scratch, call, full_shape, register, scalar


def _infer_gemm(node, in_types, consts):
    a, b = in_types[0], in_types[1]
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise node.fail(f"Gemm takes 2-D A and B, got {a} and {b}")
    m, k = a.shape[::-1] if node.attrs.get("transA", 0) else a.shape
    k2, n = b.shape[::-1] if node.attrs.get("transB", 0) else b.shape
    if k != k2:
        raise node.fail(f"inner dimensions differ: A {a} (transA={node.attrs.get('transA', 0)}) "
                        f"and B {b} (transB={node.attrs.get('transB', 0)})")
    if len(in_types) > 2 and in_types[2] is not None:
        try:
            np.broadcast_shapes(in_types[2].shape, (m, n))
        except ValueError as e:
            raise node.fail(f"C {in_types[2]} does not broadcast to ({m}, {n})") from e
    return [TensorType(a.dtype, (m, n))]


def _gemm_scratch(node, in_types, out_types):
    c = in_types[2] if len(in_types) > 2 else None
    out = []
    if c is not None and float(node.attrs.get("beta", 1.0)) not in (0.0, 1.0):
        out.append((out_types[0], False))
    return out + broadcast_scratch([c], out_types[0])


def product(a, b, o):
    """The fastest numpy call that computes a @ b into o: np.dot for 2-D operands (it skips
    matmul's broadcasting machinery, ~0.45 µs less per call), np.matmul otherwise."""
    if a.ndim == 2 and b.ndim == 2 and o.flags.c_contiguous and a.dtype == b.dtype == o.dtype:
        return call(np.dot, a, b, o)
    return call(np.matmul, a, b, out=o)


def _bind_gemm(node, ins, outs, scratch):
    a, b, o = ins[0], ins[1], outs[0]
    c = ins[2] if len(ins) > 2 else None
    steps = []
    if c is not None:     # C at the output's full shape: expanded once if constant, else copied
        c, step = full_shape(c, o.shape, scratch[-1] if c.size != o.size else None)
        steps = [step] if step is not None else []
    A = a.T if node.attrs.get("transA", 0) else a
    B = b.T if node.attrs.get("transB", 0) else b
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    al, be = scalar(alpha, o.dtype), scalar(beta, o.dtype)
    if c is not None and beta == 0.0:
        c = None

    program = steps + [product(A, B, o)]
    if alpha != 1.0:
        program.append(call(np.multiply, o, al, o))
    if c is not None and beta == 1.0:
        program.append(call(np.add, o, c, o))
    elif c is not None:
        t = scratch[0]
        program += [call(np.multiply, c, be, t), call(np.add, o, t, o)]
    return program


def _gemm_flops(node, in_types, out_types):
    m, n = out_types[0].shape
    k = in_types[0].shape[0] if node.attrs.get("transA", 0) else in_types[0].shape[1]
    return 2 * m * n * k


register("Gemm", _infer_gemm, _bind_gemm, scratch=_gemm_scratch, flops=_gemm_flops)


def _matmul_shape(node, a, b):
    sa, sb = list(a.shape), list(b.shape)
    if not sa or not sb:
        raise node.fail(f"MatMul does not take scalars: {a}, {b}")
    va, vb = len(sa) == 1, len(sb) == 1
    if va:
        sa = [1] + sa
    if vb:
        sb = sb + [1]
    if sa[-1] != sb[-2]:
        raise node.fail(f"inner dimensions differ: {a} @ {b}")
    try:
        batch = np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
    except ValueError as e:
        raise node.fail(f"batch dimensions do not broadcast: {a} @ {b}") from e
    out = list(batch) + [sa[-2], sb[-1]]
    if va:
        out.pop(-2)
    if vb:
        out.pop(-1)
    return tuple(out), sa[-1]


def _infer_matmul(node, in_types, consts):
    a, b = in_types
    if a.dtype != b.dtype:
        raise node.fail(f"A and B must share a dtype, got {a} and {b}")
    return [TensorType(a.dtype, _matmul_shape(node, a, b)[0])]


def _bind_matmul(node, ins, outs, scratch):
    return product(ins[0], ins[1], outs[0])


def _matmul_flops(node, in_types, out_types):
    return 2 * out_types[0].size * _matmul_shape(node, *in_types)[1]


register("MatMul", _infer_matmul, _bind_matmul, flops=_matmul_flops)
