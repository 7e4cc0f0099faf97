"""The cpu backend's integer products (backends/cpu/quant.py, qkernels.py) on every form a target
can pick — AVX-512 VNNI (native here when the CPU has it), AVX2 (x86-64-v3) and the generic
int32 loops (x86-64-v2) — exactly equal to the numpy reference; onnxruntime's quantized
models on the cpu backend (never the numpy fallback) within quantization tolerance of it."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu.toolchain import find_compiler
from nnos.backends.verify import TOLERANCE
from nnos_models.zoo.build import build
from tests.support.onnx_models import model, save, vi
from tests.support.paths import ROOT
from tests.support.quantized import I8, input_feed, ints, reference_outputs, quantized

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler"),
              pytest.mark.usefixtures("cpu_cache")]


def _on_cpu(plan, feeds):
    """The plan run once on the cpu backend (which it must get): (the executable, the
    reference's outputs)."""
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    return exe, plan(feeds)


def _exactly_as_the_reference(plan, feeds):
    exe, want = _on_cpu(plan, feeds)
    for k, v in want.items():
        np.testing.assert_array_equal(exe.outputs[k], v, err_msg=k)
    return exe


@pytest.mark.parametrize("m,k,n", [(1, 64, 256), (1, 7, 37), (5, 19, 16), (6, 33, 70),
                                   (9, 32, 80),    # VNNI: rows in place, two pairs of column blocks and one alone
                                   (7, 16, 40),    # … a pair, then a part-filled block alone
                                   (4, 8, 24)])    # … a pair whose second block is part-filled
@pytest.mark.parametrize("a_dt,b_dt,b_zp", [("uint8", "int8", None), ("int8", "int8", "column"),
                                            ("uint8", "uint8", "128"), ("int8", "uint8", "wide")])
def test_matmul_integer_with_a_constant_weight(tmp_path, cpu_target, m, k, n, a_dt, b_dt, b_zp):
    """"wide": a uint8 weight whose centred values do not fit int8 — the generic loops."""
    rng = np.random.default_rng(m * k + n)
    a_dt, b_dt = np.dtype(a_dt), np.dtype(b_dt)
    b, zps = ints(b_dt, (k, n), rng), None
    if b_zp == "column":
        b, zps = b // 2, ints(b_dt, (n,), rng) // 4
    elif b_zp == "128":
        b, zps = (rng.integers(-127, 128, size=(k, n)) + 128).astype(np.uint8), np.array(128, b_dt)
    elif b_zp == "wide":
        zps = np.array(3, b_dt)
    inits = [("b", b), ("az", np.array(5, a_dt))] + ([("bz", zps)] if zps is not None else [])
    node = helper.make_node("MatMulInteger", ["a", "b", "az"] + (["bz"] if zps is not None else []), ["y"])
    mdl = model([node], [vi("a", [m, k], I8[a_dt])], [vi("y", [m, n], TensorProto.INT32)], inits, opset=13)
    plan = nnos.compile(save(mdl, tmp_path / "m.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    fours, copied = m >= 4 and b_zp != "wide", bool(k % 4) or a_dt == np.int8    # VNNI: four rows a call,
    assert ("nnos_qrows4_vnni(R + i * " in src) == (fours and copied)             # all copied to whole words first
    assert ("nnos_qrows4_vnni((const uint8_t *)A + i * " in src) == (fours and not copied)   # or in place
    _exactly_as_the_reference(plan, {"a": ints(a_dt, (m, k), rng)})


@pytest.mark.parametrize("m,k", [(9, 32), (6, 33)])
def test_a_product_s_rows_past_the_whole_copy_are_copied_four_at_a_time(tmp_path, monkeypatch, cpu_target, m, k):
    """An int8 product's rows become unsigned bytes in a copy of them all before the first
    product, up to WHOLE_COPY bytes; past it four rows at a time, each group right before its
    product (the same sums)."""
    from nnos.backends.cpu import quant, source
    monkeypatch.setattr(quant, "WHOLE_COPY", 0)
    rng = np.random.default_rng(m + k)
    node = helper.make_node("MatMulInteger", ["a", "b", "az"], ["y"])
    mdl = model([node], [vi("a", [m, k], I8[np.dtype("int8")])], [vi("y", [m, 40], TensorProto.INT32)],
                [("b", ints(np.dtype("int8"), (k, 40), rng)), ("az", np.array(-3, np.int8))], opset=13)
    plan = nnos.compile(save(mdl, tmp_path / "m.onnx"))
    assert "nnos_qrows4_vnni(R, " in source(plan)
    _exactly_as_the_reference(plan, {"a": ints(np.dtype("int8"), (m, k), rng)})


def test_matmul_integer_with_computed_operands_and_per_row_zero_points(tmp_path, cpu_target):
    rng = np.random.default_rng(1)
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    mdl = model([node], [vi("a", [2, 3, 9], TensorProto.UINT8), vi("b", [2, 9, 5], TensorProto.INT8)],
                [vi("y", [2, 3, 5], TensorProto.INT32)],
                [("az", np.array([1, 200, 7], np.uint8)), ("bz", np.array([0, -3, 5, 1, 2], np.int8))], opset=13)
    plan = nnos.compile(save(mdl, tmp_path / "m.onnx"))
    _exactly_as_the_reference(plan, {"a": ints(np.uint8, (2, 3, 9), rng), "b": ints(np.int8, (2, 9, 5), rng)})


@pytest.mark.parametrize("c,oc,hw,kernel,stride,pad,dil,group", [
    (3, 16, 17, 5, 2, 2, 1, 1), (16, 7, 9, 3, 1, 1, 1, 1), (8, 12, 11, 3, 2, 0, 2, 1), (4, 6, 8, 3, 1, 1, 1, 2),
    (8, 20, 8, 1, 1, 0, 1, 1),       # 1×1 (qpack.pointwise): whole words, whole groups of 16 and 8 pixels
    (7, 5, 9, 1, 1, 0, 1, 1),        # 1×1: a part-filled word, a part-filled last group of pixels
    (64, 9, 33, 1, 1, 0, 1, 1),      # 1×1, VNNI's tiles of 16 groups (the last short), a last group of one
                                     # pixel, a last group of one output channel
    (16, 6, 20, 3, 1, 1, 1, 1),      # 3×3 at stride 1, rows of 20: VNNI's direct form (qdirect.py), a group of
                                     # each of two rows, a row's last group of 4 pixels
    (8, 5, 17, 3, 1, 1, 1, 1),       # … rows of 17, an odd last row alone, a row's last group of one pixel
    (16, 6, 20, 3, 1, 1, 2, 1),      # dilated: VNNI's tiles of 7 groups, 21 groups, the last of 4 pixels
    (32, 5, 9, 5, 1, 2, 1, 1),       # 5×5 over 32 channels: 12.8 KB a group, VNNI's tiles of two (a pair a
                                     # call), the last group of one pixel
    (6, 9, 7, 1, 2, 0, 1, 1),        # 1×1 at stride 2: the windowed form
    (3, 16, 64, 5, 2, 2, 1, 1),      # an image's channels, rows of whole groups: a word's pixels a vector (stride 2)
    (2, 8, 34, 3, 1, 0, 1, 1),       # … at stride 1, a part-filled word
    (16, 6, 16, 5, 1, 2, 1, 1),      # 5×5 at stride 1, rows of whole groups, words a pixel: window rows transposed
                                     # (AVX2), VNNI's direct form
    (6, 5, 32, 3, 1, 1, 1, 1),       # … 3×3, a part-filled last word; VNNI: two groups along a row
    (16, 6, 32, 3, 2, 1, 1, 1),      # … at stride 2: each parity of the window row's pixels transposed (AVX2);
                                     # VNNI's direct form by column parity, the padding's left column odd
    (8, 5, 37, 3, 2, 1, 1, 1),       # … rows of 37 (a last 5 pixels one at a time), output rows of 19
    (16, 6, 32, 5, 2, 2, 1, 1),      # … 5×5, the padding's left column even
    (16, 6, 8, 3, 1, 1, 1, 1),       # output rows of 8: VNNI's direct form two rows a vector; AVX2's group two
                                     # whole rows, each transposed
    (32, 5, 16, 3, 2, 1, 1, 1),      # … at stride 2 (act_s's 8×8 convolutions)
    (8, 5, 4, 3, 1, 1, 1, 1),        # rows of 4: four rows a group (VNNI), two (AVX2)
    (32, 7, 16, 1, 2, 0, 1, 1)])     # 1×1 at stride 2, rows of 8: VNNI's direct form, AVX2 (one row a group)
                                     # transposes
@pytest.mark.parametrize("x_dt", ["uint8", "int8"])
def test_conv_integer_with_a_constant_weight(tmp_path, cpu_target, c, oc, hw, kernel, stride, pad, dil, group, x_dt):
    rng = np.random.default_rng(c + oc + hw)
    x_dt = np.dtype(x_dt)
    w = ints(np.int8, (oc, c // group, kernel, kernel), rng) // 2
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], kernel_shape=[kernel, kernel],
                            strides=[stride, stride], pads=[pad] * 4, dilations=[dil, dil], group=group)
    out = (hw + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
    mdl = model([node], [vi("x", [2, c, hw, hw], I8[x_dt])], [vi("y", [2, oc, out, out], TensorProto.INT32)],
                [("w", w), ("xz", np.array(9, x_dt)), ("wz", ints(np.int8, (oc,), rng) // 4)], opset=13)
    plan = nnos.compile(save(mdl, tmp_path / "c.onnx"))
    from nnos.backends.cpu import source
    src, pointwise = source(plan), kernel == stride == 1 and group == 1
    assert (" *P = " in src) == (group == 1 and not pointwise)          # a channel-last copy: windows need one
    assert ("__builtin_shuffle(r0, r1" in src) == (group == 1)          # rows interleaved in registers either way
    whole_rows = c <= 4 and group == dil == 1 and stride in (1, 2) and out % 16 == 0 and not pointwise
    assert ("typedef uint32_t vw" in src) == whole_rows                 # qpack._gather (VNNI's block)
    direct = group == 1 and not pointwise and stride in (1, 2) and dil == 1 and -(-c // 4) >= 2 and (out >= 16 or out == 8)
    assert ("nnos_qconv16_vnni_direct(P, " in src) == direct           # VNNI: operands straight from the padding
    assert ("nnos_qconv16_vnni_rows(CA, " in src) == (group == 1 and not direct)   # VNNI: a tile of groups a call
    least = 2 if stride == 1 else 4                                    # words a pixel: 4 bytes VNNI, 2 int16 AVX2
    def rows(lanes):                                                   # a group's pixels: one row's, or whole rows
        return out % lanes == 0 or (lanes % out == 0 and kernel > 1)
    rows_of_words = (not direct and -(-c // 4) >= least and rows(16)) or (-(-c // 2) >= least and rows(8))
    transposed = group == 1 and not pointwise and stride in (1, 2) and dil == 1 and rows_of_words
    assert ("uint32_t *const T = " in src) == transposed                # qpack._transposed
    _exactly_as_the_reference(plan, {"x": ints(x_dt, (2, c, hw, hw), rng)})


@pytest.mark.parametrize("h,w,stride", [(8, 8, 1), (7, 8, 1), (5, 8, 1), (10, 8, 1), (11, 16, 2), (13, 16, 2)])
@pytest.mark.parametrize("x_dt", ["uint8", "int8"])
def test_a_conv_integer_s_rows_of_eight_go_two_a_vector(tmp_path, cpu_target, h, w, stride, x_dt):
    """Output rows of eight (a backbone's last maps): VNNI's direct form with two rows' pixels a
    vector, four rows a pass — output heights of 8, 7, 5 and 10 at stride 1 (the last pass of
    four, three, one and two rows; an input of an even height padded sixteen pixels at a time,
    an odd one a value at a time), 6 and 7 at stride 2; exactly the reference, two images."""
    rng = np.random.default_rng(h * w + stride)
    x_dt = np.dtype(x_dt)
    wt = ints(np.int8, (13, 24, 3, 3), rng)
    node = helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], kernel_shape=[3, 3], strides=[stride] * 2,
                            pads=[1] * 4)
    oh = (h + 2 - 3) // stride + 1
    mdl = model([node], [vi("x", [2, 24, h, w], I8[x_dt])], [vi("y", [2, 13, oh, 8], TensorProto.INT32)],
                [("w", wt), ("xz", np.array(-7 if x_dt == np.int8 else 201, x_dt))], opset=13)
    plan = nnos.compile(save(mdl, tmp_path / "c8.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    assert f"off, Y + b * {13 * oh * 8}, {oh}, 8, 13);" in src                  # the direct kernel, rows of 8
    assert ("memcpy(d_ + 40, &o2, 16)" in src) == (stride == 1 and h % 2 == 0)   # two rows padded at once
    _exactly_as_the_reference(plan, {"x": ints(x_dt, (2, 24, h, w), rng)})


@pytest.mark.parametrize("c,hw,kernel,stride,pad,dil", [
    (6, 33, 3, 1, 1, 1),       # rows of whole vectors and a tail
    (5, 17, 3, 2, 1, 1),       # stride 2 (two loads' even lanes), a row of 9: a part-stored vector
    (4, 20, 5, 2, 2, 1),       # 5×5 at stride 2
    (3, 12, 3, 1, 2, 2),       # dilated
    (2, 11, 7, 3, 3, 1),       # stride 3: the generic loops
    (3, 6, 3, 1, 0, 1),        # rows of 4: a part-stored vector
    (2, 40, 17, 1, 8, 1)])     # 289 taps: past 258, a sum may not be a float exactly: the generic loops
@pytest.mark.parametrize("x_dt,w_dt", [("uint8", "int8"), ("int8", "uint8")])
def test_a_depthwise_conv_integer_sums_in_floats_exactly(tmp_path, cpu_target, c, hw, kernel, stride, pad, dil, x_dt, w_dt):
    """A depthwise ConvInteger with a constant weight at stride 1 or 2 sums its centred products
    as floats (each sum of up to 258 of them below 2**24: exact) in the depthwise row tiles: exactly
    the reference at the extremes of both types (|x − zx| and |w − zw| up to 255), two images."""
    rng = np.random.default_rng(c * hw + kernel)
    x_dt, w_dt = np.dtype(x_dt), np.dtype(w_dt)
    w = ints(w_dt, (c, 1, kernel, kernel), rng)
    info = np.iinfo(w_dt)
    w[0] = info.max                                  # against a zero point at the other end: 255 apart
    wz = np.full(c, info.min, w_dt)
    wz[1:] = ints(w_dt, (c - 1,), rng)
    xz = np.iinfo(x_dt).max
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], kernel_shape=[kernel, kernel],
                            strides=[stride, stride], pads=[pad] * 4, dilations=[dil, dil], group=c)
    out = (hw + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
    mdl = model([node], [vi("x", [2, c, hw, hw], I8[x_dt])], [vi("y", [2, c, out, out], TensorProto.INT32)],
                [("w", w), ("xz", np.array(xz, x_dt)), ("wz", wz)], opset=13)
    plan = nnos.compile(save(mdl, tmp_path / "dw.onnx"))
    from nnos.backends.cpu import source
    assert ("(float)((int32_t)xc[y * " in source(plan)) == (kernel * kernel <= 258 and stride < 3)
    x = ints(x_dt, (2, c, hw, hw), rng)
    x[0, 0] = np.iinfo(x_dt).min                     # 255 from its zero point, against channel 0's weights
    exe = _exactly_as_the_reference(plan, {"x": x})
    assert np.abs(exe.outputs["y"]).max() > 255 * 255      # sums past one product's reach were there
    exe.close()


@pytest.mark.parametrize("q_dt,zp", [("uint8", 128), ("uint8", 0), ("int8", -3)])
@pytest.mark.parametrize("shape", [(2, 5, 37), (1, 7)])      # whole vectors and a part-filled last; fewer than one
@pytest.mark.parametrize("scale", [0.25, 0.0371])            # ties exactly half-way (a power of two); any other
def test_a_quantizelinear_is_one_vector_loop_exactly_the_reference(tmp_path, cpu_target, q_dt, zp, shape, scale):
    """A QuantizeLinear by one scale and zero point stores whole vectors of bytes (qstore.py's
    vquant_store: minps/maxps and cvtps2dq on AVX-512 and AVX2, vector extensions elsewhere),
    bitwise the reference: ties to even, saturation both ways, NaN to the low bound, infinities
    and a huge value, the last vector's tail."""
    q_dt = np.dtype(q_dt)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    mdl = model(nodes, [vi("x", list(shape))], [vi("q", list(shape), I8[q_dt])],
                [("s", np.array(scale, np.float32)), ("z", np.array(zp, q_dt))])
    plan = nnos.compile(save(mdl, tmp_path / "q.onnx"))
    from nnos.backends.cpu import source
    assert "vquant_store(y + i, vload(x + i)" in source(plan)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 60 * scale).astype(np.float32)
    flat = x.reshape(-1)
    ties = (np.arange(flat.size, dtype=np.float32) - flat.size // 2 + 0.5) * np.float32(scale)
    flat[::2] = ties[::2]                                    # k + ½ steps: even and odd k
    flat[:5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
    exe = _exactly_as_the_reference(plan, {"x": x})
    got = exe.outputs["q"].reshape(-1)
    info = np.iinfo(q_dt)
    assert got[0] == info.min and got[1] == info.max and got[2] == info.min       # the cases were there
    exe.close()


@pytest.mark.parametrize("q_dt", ["uint8", "int8"])
def test_a_quantizelinear_by_a_computed_scale_is_one_vector_loop(tmp_path, cpu_target, q_dt):
    """A QuantizeLinear whose scale and zero point are computed at run time (a dynamically
    quantized model's; here graph inputs): the same vector loop, bitwise the reference over
    several scales and zero points, with ties, saturation, NaN and infinities."""
    q_dt = np.dtype(q_dt)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    mdl = model(nodes, [vi("x", [3, 7, 11]), vi("s", []), vi("z", [], I8[q_dt])], [vi("q", [3, 7, 11], I8[q_dt])], [])
    plan = nnos.compile(save(mdl, tmp_path / "qs.onnx"))
    from nnos.backends.cpu import source
    assert "vquant_store(y + i, vload(x + i), s_, lo_, hi_, z_, VW)" in source(plan)
    rng = np.random.default_rng(9)
    info = np.iinfo(q_dt)
    for scale, zp in [(0.25, info.min), (0.0371, (int(info.min) + int(info.max)) // 2), (3.0, info.max)]:
        x = (rng.standard_normal((3, 7, 11)) * 150 * scale).astype(np.float32)
        flat = x.reshape(-1)
        flat[1::3] = ((np.arange(flat.size)[1::3] - 100 + 0.5) * np.float32(scale)).astype(np.float32)   # ties
        flat[:4] = [np.nan, np.inf, -np.inf, 1e30]
        _exactly_as_the_reference(plan, {"x": x, "s": np.array(scale, np.float32), "z": np.array(zp, q_dt)}).close()


@pytest.mark.parametrize("q_dt,axis", [("uint8", None), ("int8", None), ("int8", 1)])
@pytest.mark.parametrize("also_read", [False, True])
def test_a_quantize_dequantize_pair_runs_as_one_step(tmp_path, cpu_target, q_dt, axis, also_read):
    """A QDQ model's rounding of a float tensor (QuantizeLinear, then DequantizeLinear by the same
    scale and zero point) is one elementwise op chained into the loop of the ops around it
    (passes/qdq.py), bitwise the reference's two steps: over its whole range, saturating both
    ways, NaN to the low bound; per tensor (the vector form) or per channel (the generic one).
    Not when the quantized tensor is read elsewhere too (here: a graph output)."""
    q_dt = np.dtype(q_dt)
    c = 5
    scale = np.array(0.05, np.float32) if axis is None else np.linspace(0.01, 0.2, c).astype(np.float32)
    zp = np.array(3, q_dt) if axis is None else (np.arange(c) - 2).astype(q_dt)
    kw = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Mul", ["x", "two"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "s", "z"], ["q"], **kw),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], **kw),
             helper.make_node("Relu", ["d"], ["y"])]
    outs = [vi("y", [2, c, 7])] + ([vi("q", [2, c, 7], I8[q_dt])] if also_read else [])
    mdl = model(nodes, [vi("x", [2, c, 7])], outs, [("two", np.array(2, np.float32)), ("s", scale), ("z", zp)])
    plan = nnos.compile(save(mdl, tmp_path / "qdq.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    assert (": DequantizeLinear" in src) == also_read                    # a step of its own
    assert ("vfakeq(v, " in src) == (axis is None and not also_read)     # in registers, between Mul and Relu
    x = np.random.default_rng(3).standard_normal((2, c, 7)).astype(np.float32) * 8
    x[0, 0, :3] = [np.nan, 1e6, -1e6]
    _exactly_as_the_reference(plan, {"x": x})


@pytest.mark.parametrize("case", ["narrow", "rows", "softmax"])
def test_a_rounding_after_a_product_or_a_softmax_runs_in_registers(tmp_path, cpu_target, case):
    """A QDQ model's attention rounds its float products and softmax to a grid: that rounding
    (one constant scale and zero point) is applied in registers by the kernel that computes the
    value — the narrow product (heads of 8 columns), the row form (a tail of 5 columns), the softmax's
    last pass — not a second pass over the output. The products are of small integers (exact
    sums in any order), so bitwise the reference; the softmax (its exp a polynomial) within one
    step of the grid, and nearly every value exactly."""
    from nnos.backends.cpu import source
    scale, zp = (np.array(8.0, np.float32), np.array(128, np.uint8)) if case != "softmax" else \
        (np.array(1 / 255, np.float32), np.array(0, np.uint8))
    qdq = [helper.make_node("QuantizeLinear", ["v", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    rng = np.random.default_rng(5)
    if case == "softmax":
        shape = [2, 4, 13, 65]
        nodes = [helper.make_node("Softmax", ["a"], ["v"], axis=-1)] + qdq
        ins, feeds = [vi("a", shape)], {"a": (rng.standard_normal(shape) * 3).astype(np.float32)}
    else:
        qs, ks = ([3, 65, 65], [3, 65, 8]) if case == "narrow" else ([2, 11, 40], [2, 40, 37])
        shape = qs[:-1] + ks[-1:]
        nodes = [helper.make_node("Relu", ["a"], ["ar"]), helper.make_node("Relu", ["b"], ["br"]),
                 helper.make_node("MatMul", ["ar", "br"], ["v"])] + qdq
        ins = [vi("a", qs), vi("b", ks)]
        feeds = {"a": rng.integers(-2, 9, qs).astype(np.float32), "b": rng.integers(-2, 9, ks).astype(np.float32)}
    plan = nnos.compile(save(model(nodes, ins, [vi("y", shape)], [("s", scale), ("z", zp)]), tmp_path / "r.onnx"))
    src = source(plan)
    assert "fakeq(" in src and "vfakeq(v, " not in src                # in registers, no pass of its own
    if case != "softmax":
        _exactly_as_the_reference(plan, feeds)
        return
    exe, want = _on_cpu(plan, feeds)
    got, want = exe.outputs["y"], want["y"]
    assert np.abs(got - want).max() <= scale * 1.0001
    assert np.mean(got == want) > 0.999


@pytest.mark.parametrize("scale,zp", [(0.0371, np.int8(-20)), (1 / 255, np.uint8(0))])
def test_a_product_s_and_a_softmax_s_roundings_multiply_by_the_reciprocal(tmp_path, cpu_target, scale, zp):
    """A float product's and a softmax's values are their own, not the reference's bit for bit
    (sums in another order, exp from tables or a polynomial), so their roundings multiply by
    1/s where QuantizeLinear divides (the softmax's by 1/(sum·s), one product): every value on
    the grid, within one step of the reference, and nearly every one exactly its value. The
    elementwise rounding between them (a Mul's) keeps the division."""
    from nnos.backends.cpu import source
    s, z = np.array(scale, np.float32), np.array(zp)

    def qdq(x, y):
        return [helper.make_node("QuantizeLinear", [x, "s", "z"], [x + "q"]),
                helper.make_node("DequantizeLinear", [x + "q", "s", "z"], [y])]
    nodes = [helper.make_node("MatMul", ["a", "b"], ["p"]), *qdq("p", "pd"),
             helper.make_node("Mul", ["pd", "two"], ["m"]), *qdq("m", "md"),
             helper.make_node("Softmax", ["md"], ["e"], axis=-1), *qdq("e", "y")]
    shape = [3, 65, 65]
    plan = nnos.compile(save(model(nodes, [vi("a", [3, 65, 8]), vi("b", [3, 8, 65])], [vi("y", shape), vi("pd", shape)],
                                   [("s", s), ("z", z), ("two", np.array(1.5, np.float32))]), tmp_path / "r.onnx"))
    src = source(plan)
    assert src.count("vfakeqr(") >= 2 and "vfakeq(v, " in src     # the product's and the softmax's; the Mul's
    rng = np.random.default_rng(13)
    feeds = {"a": rng.standard_normal((3, 65, 8)).astype(np.float32),
             "b": (rng.standard_normal((3, 8, 65)) * 0.7).astype(np.float32)}
    exe, want = _on_cpu(plan, feeds)
    info = np.iinfo(z.dtype)
    for name in ("pd", "y"):
        got = exe.outputs[name]
        k = np.rint(got / s)
        assert np.array_equal(got, (k * s).astype(np.float32)) and k.min() >= info.min - int(zp) and \
            k.max() <= info.max - int(zp), name
        assert np.abs(got - want[name]).max() <= s * 1.0001, name
        assert np.mean(got == want[name]) > 0.99, name
    assert len(np.unique(exe.outputs["pd"])) > 100                 # the grid's steps, not a few values


def test_a_rounding_in_a_product_s_scalar_tail_sends_nan_to_the_low_bound(tmp_path, cpu_target):
    """NaN and infinities reaching a product's last columns (after its whole vectors: scalars)
    round as QuantizeLinear does — NaN to the low bound, ±∞ to the bounds — bitwise the
    reference, as in the vectors."""
    qdq = [helper.make_node("QuantizeLinear", ["v", "s", "z"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    nodes = [helper.make_node("MatMul", ["a", "b"], ["v"])] + qdq
    plan = nnos.compile(save(model(nodes, [vi("a", [1, 4, 8]), vi("b", [1, 8, 37])], [vi("y", [1, 4, 37])],
                                   [("s", np.array(0.5, np.float32)), ("z", np.array(128, np.uint8))]),
                             tmp_path / "tail.onnx"))
    rng = np.random.default_rng(11)
    a = rng.integers(-3, 4, (1, 4, 8)).astype(np.float32)
    a[0, 0, 3], a[0, 1, 0], a[0, 2, 5] = np.nan, np.inf, -np.inf
    b = rng.integers(1, 4, (1, 8, 37)).astype(np.float32)            # positive: ±∞ stays signed
    want = plan({"a": a, "b": b})["y"]
    assert (want[0, 0] == -64).all() and (want[0, 1] == 63.5).all() and (want[0, 2] == -64).all()
    _exactly_as_the_reference(plan, {"a": a, "b": b})


def _dequantize_chain(c: int, axis, rng, then: str):
    """DequantizeLinear of int32 sums (per tensor or per channel), the bias, a ReLU, then: the
    rounding to the next grid ("rounding"), that and a residual Add of a second input
    ("residual"), or a QuantizeLinear whose bytes are the output ("quantize")."""
    scale = np.array(0.002, np.float32) if axis is None else np.linspace(0.001, 0.004, c).astype(np.float32)
    kw = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("DequantizeLinear", ["acc", "s"], ["d"], **kw), helper.make_node("Add", ["d", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("QuantizeLinear", ["r", "gs", "gz"], ["q"])]
    inputs, out = [vi("acc", [2, c, 9, 9], TensorProto.INT32)], vi("y", [2, c, 9, 9])
    if then == "quantize":
        nodes[-1].output[0], out = "y", vi("y", [2, c, 9, 9], TensorProto.UINT8)
    else:
        nodes.append(helper.make_node("DequantizeLinear", ["q", "gs", "gz"], ["y" if then == "rounding" else "f"]))
    if then == "residual":
        nodes.append(helper.make_node("Add", ["f", "skip"], ["y"]))
        inputs.append(vi("skip", [2, c, 9, 9]))
    inits = [("s", scale), ("b", rng.standard_normal((c, 1, 1)).astype(np.float32)),
             ("gs", np.array(0.02, np.float32)), ("gz", np.array(0, np.uint8))]
    return model(nodes, inputs, [out], inits)


@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("then", ["rounding", "residual", "quantize"])
def test_a_dequantize_and_its_chain_are_one_vector_loop(tmp_path, cpu_target, axis, then):
    """An integer product's DequantizeLinear and its chain (bias, ReLU, rounding, a residual):
    one vector loop over each channel's row of int32 sums, and where a QuantizeLinear is its
    only reader, that loop stores the bytes (the QuantizeLinear's step runs as nothing);
    exactly the reference (two images: the channel is the row's index modulo C), sums past
    2**24 (rounded to float) and saturation included."""
    c, rng = 6, np.random.default_rng(11)
    plan = nnos.compile(save(_dequantize_chain(c, axis, rng, then), tmp_path / "dq_chain.onnx"))
    from nnos.backends.cpu import source
    from nnos.ops.quant import FAKE_QUANT
    ops = [[n.op] + [e.op for e in n.epilogue] for n in plan.graph.nodes]
    chain = ["DequantizeLinear", "Add", "Relu"] + {"rounding": [FAKE_QUANT], "residual": [FAKE_QUANT, "Add"],
                                                   "quantize": []}[then]
    assert ops == [chain] + ([["QuantizeLinear"]] if then == "quantize" else [])
    src = source(plan)
    assert src.count("const long o = ch * 81;") == 1 and "for (long i0 = 0;" not in src     # the one loop
    assert ("stored as step 1's QuantizeLinear" in src) == (then == "quantize")
    acc = rng.integers(-3000, 3000, size=(2, c, 9, 9)).astype(np.int32)
    acc[0, 0, 0, :4] = [2 ** 24 + 1, -(2 ** 25) - 3, 2 ** 31 - 1, -(2 ** 31)]
    feeds = {"acc": acc} | ({"skip": rng.standard_normal((2, c, 9, 9)).astype(np.float32)} if then == "residual" else {})
    exe = _exactly_as_the_reference(plan, feeds)
    if then == "quantize":
        assert exe.outputs["y"].max() == 255 and exe.outputs["y"].min() == 0
    exe.close()


def test_a_dynamic_product_s_cast_and_its_chain_are_one_vector_loop(tmp_path, cpu_target):
    """A dynamically quantized product's sums cast to float, times the scale computed at run time
    (here an input), plus a bias per channel, clipped: the channel-row loop, exactly the
    reference (the product rounded before the add, as numpy's)."""
    from onnx import TensorProto as T
    rng = np.random.default_rng(12)
    nodes = [helper.make_node("Cast", ["acc"], ["f"], to=T.FLOAT), helper.make_node("Mul", ["f", "s"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]), helper.make_node("Clip", ["a", "lo", "hi"], ["y"])]
    mdl = model(nodes, [vi("acc", [2, 6, 9, 9], T.INT32), vi("s", [])], [vi("y", [2, 6, 9, 9])],
                [("b", rng.standard_normal((6, 1, 1)).astype(np.float32)), ("lo", np.array(0, np.float32)),
                 ("hi", np.array(6, np.float32))])
    plan = nnos.compile(save(mdl, tmp_path / "cast_chain.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    assert src.count("const long o = ch * 81;") == 1 and "for (long i0 = 0;" not in src
    acc = rng.integers(-40000, 40000, size=(2, 6, 9, 9)).astype(np.int32)
    acc[0, 0, 0, :2] = [2 ** 24 + 1, -(2 ** 31)]
    for scale in (1.3e-4, 7.77e-5):
        _exactly_as_the_reference(plan, {"acc": acc, "s": np.array(scale, np.float32)}).close()


def test_a_dynamic_product_s_gelu_runs_in_blocks_with_its_range(tmp_path, cpu_target):
    """act_s's dynamically quantized feed-forward: the sums cast, times the run-time scale, plus a
    bias row, GELU, and the range the next product's quantization takes — one loop whose GELUs
    go in blocks of vectors in two passes, then whole vectors, then a scalar tail (rows of 300).
    Within 4 float32 ulp of the reference's GELU; the range exactly the stored values' extremes;
    a NaN scale makes every value and the range NaN."""
    from onnx import TensorProto as T
    rng = np.random.default_rng(21)
    nodes = [helper.make_node("Cast", ["acc"], ["f"], to=T.FLOAT), helper.make_node("Mul", ["f", "s"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]), helper.make_node("Gelu", ["a"], ["g"]),
             helper.make_node("ReduceMin", ["g"], ["lo"], keepdims=0), helper.make_node("ReduceMax", ["g"], ["hi"], keepdims=0),
             helper.make_node("Mul", ["g", "one"], ["y"])]
    mdl = model(nodes, [vi("acc", [1, 9, 300], T.INT32), vi("s", [])], [vi("y", [1, 9, 300]), vi("lo", []), vi("hi", [])],
                [("b", rng.standard_normal(300).astype(np.float32)), ("one", np.array(1, np.float32))], opset=20)
    plan = nnos.compile(save(mdl, tmp_path / "ffn.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    assert "const long o = ch * 300;" in src and "G_[k_] = vgelu_arg(v);" in src and "r0 = vminnan(r0, v);" in src
    acc = rng.integers(-3000, 3000, size=(1, 9, 300)).astype(np.int32)
    exe, want = _on_cpu(plan, {"acc": acc, "s": np.array(1e-3, np.float32)})
    got = exe.outputs
    np.testing.assert_allclose(got["y"], want["y"], rtol=4 * 2.0 ** -23, atol=1e-6)
    assert got["lo"] == got["y"].min() and got["hi"] == got["y"].max()
    exe.close()
    exe, _ = _on_cpu(plan, {"acc": acc, "s": np.array(np.nan, np.float32)})
    assert np.isnan(exe.outputs["y"]).all() and np.isnan(exe.outputs["lo"]) and np.isnan(exe.outputs["hi"])
    exe.close()


@pytest.mark.parametrize("per_column", [False, True])
def test_a_product_s_dequantize_adds_its_bias_along_the_last_axis_in_the_vector_loop(tmp_path, cpu_target, per_column):
    """A MatMulInteger's sums [N, T, D] dequantized — by one scale, or by one a column (a weight
    quantized per output column: int8 act_s's feed-forward; the generic loop took 5.3 µs there,
    this one 4.0 with its lookup pass) — a bias of D added (one row for every N and T), rounded:
    the channel-row form reads the bias and the scales as rows; exactly the reference."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("DequantizeLinear", ["acc", "s"], ["d"], axis=-1),
             helper.make_node("Add", ["d", "b"], ["a"]),
             helper.make_node("QuantizeLinear", ["a", "gs", "gz"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "gs", "gz"], ["y"])]
    scale = rng.uniform(0.001, 0.005, 37).astype(np.float32) if per_column else np.array(0.003, np.float32)
    mdl = model(nodes, [vi("acc", [2, 5, 37], TensorProto.INT32)], [vi("y", [2, 5, 37])],
                [("s", scale), ("b", rng.standard_normal(37).astype(np.float32)),
                 ("gs", np.array(0.05, np.float32)), ("gz", np.array(-4, np.int8))])
    plan = nnos.compile(save(mdl, tmp_path / "dq_row.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    assert src.count("const long o = ch * 37;") == 1 and "for (long i0 = 0;" not in src
    acc = rng.integers(-5000, 5000, size=(2, 5, 37)).astype(np.int32)
    _exactly_as_the_reference(plan, {"acc": acc}).close()


def test_a_gelu_between_roundings_is_one_vector_loop(tmp_path, monkeypatch, cpu_target):
    """An exported GELU in a QDQ model: a rounding after each of its ops (Div, Erf, Add, Mul,
    Mul), and after the Reshape before it too (a rounding of values already on their grid,
    dropped). One loop of vectors; within one step of the last grid of the reference (its
    erf and the backend's differ in the last bits, which a rounding may carry a step). (Not
    made a table here: the form of a chain that is not a function of one grid's values.)"""
    import nnos.passes
    monkeypatch.setattr(nnos.passes, "tabulate", lambda g: g)
    grid = [("s", np.array(0.03, np.float32)), ("z", np.array(128, np.uint8))]

    def rounded(op, ins, out):               # op, then its rounding: QuantizeLinear, DequantizeLinear
        return [helper.make_node(op, ins, [f"{out}_f"]), helper.make_node("QuantizeLinear", [f"{out}_f", "s", "z"], [f"{out}_q"]),
                helper.make_node("DequantizeLinear", [f"{out}_q", "s", "z"], [out])]
    nodes = (rounded("Identity", ["in"], "x0") + [helper.make_node("Reshape", ["x0", "shape"], ["x1"])]
             + rounded("Identity", ["x1"], "x") + rounded("Div", ["x", "sqrt2"], "d") + rounded("Erf", ["d"], "e")
             + rounded("Add", ["e", "one"], "a") + rounded("Mul", ["x", "a"], "m") + rounded("Mul", ["m", "half"], "y"))
    consts = grid + [("sqrt2", np.array(2 ** 0.5, np.float32)), ("one", np.array(1, np.float32)),
                     ("half", np.array(0.5, np.float32)), ("shape", np.array([2, 100], np.int64))]
    mdl = model(nodes, [vi("in", [2, 4, 25])], [vi("y", [2, 100])], consts)
    plan = nnos.compile(save(mdl, tmp_path / "gelu_qdq.onnx"))
    from nnos.backends.cpu import source
    from nnos.ops.quant import FAKE_QUANT
    chain = [[n.op] + [e.op for e in n.epilogue] for n in plan.graph.nodes]
    assert ["Div", FAKE_QUANT, "Erf", FAKE_QUANT, "Add", FAKE_QUANT, "Mul", FAKE_QUANT, "Mul", FAKE_QUANT] in chain, chain
    assert sum(FAKE_QUANT in c for c in chain) == 2, chain                # the input's rounding, then the GELU's loop
    assert source(plan).count("vfakeq(v, ") >= 5
    exe = prepare(plan, "cpu")
    x = np.random.default_rng(7).standard_normal((2, 4, 25)).astype(np.float32) * 3
    np.copyto(exe.inputs["in"], x)
    exe.run()
    np.testing.assert_allclose(exe.outputs["y"], plan({"in": x})["y"], rtol=0, atol=0.03 * 1.01)


def test_a_dequantized_gelu_s_table_is_a_second_vector_pass(tmp_path, cpu_target):
    """A product's sums dequantized, its bias added and rounded, then a GELU rounded after each
    op (made a table of the grid: nnos.Lookup): the channel-row loop up to the lookup, then the
    lookup as a vector pass over the floats; exactly the reference."""
    rng = np.random.default_rng(8)
    grid = [("s", np.array(0.03, np.float32)), ("z", np.array(128, np.uint8))]

    def rounded(op, ins, out):
        return [helper.make_node(op, ins, [f"{out}_f"]), helper.make_node("QuantizeLinear", [f"{out}_f", "s", "z"], [f"{out}_q"]),
                helper.make_node("DequantizeLinear", [f"{out}_q", "s", "z"], [out])]
    nodes = ([helper.make_node("DequantizeLinear", ["acc", "as"], ["d0"])] + rounded("Add", ["d0", "b"], "x")
             + rounded("Div", ["x", "sqrt2"], "d") + rounded("Erf", ["d"], "e") + rounded("Add", ["e", "one"], "a")
             + rounded("Mul", ["x", "a"], "m") + rounded("Mul", ["m", "half"], "y"))
    consts = grid + [("as", np.array(0.001, np.float32)), ("b", rng.standard_normal(37).astype(np.float32)),
                     ("sqrt2", np.array(2 ** 0.5, np.float32)), ("one", np.array(1, np.float32)),
                     ("half", np.array(0.5, np.float32))]
    mdl = model(nodes, [vi("acc", [2, 5, 37], TensorProto.INT32)], [vi("y", [2, 5, 37])], consts)
    plan = nnos.compile(save(mdl, tmp_path / "dq_gelu.onnx"))
    from nnos.backends.cpu import source
    from nnos.ops.lookup import LOOKUP
    assert [n.op for n in plan.graph.nodes] == ["DequantizeLinear"] and LOOKUP in [e.op for e in plan.graph.nodes[0].epilogue]
    src = source(plan)
    assert "const long o = ch * 37;" in src and "vlookup(" in src and "for (long i0 = 0;" not in src
    acc = rng.integers(-3000, 3000, size=(2, 5, 37)).astype(np.int32)
    _exactly_as_the_reference(plan, {"acc": acc}).close()


@pytest.fixture(scope="module")
def floats(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("zoo")), ["mlp_m", "cnn_s"])


@pytest.mark.parametrize("name", ["mlp_m", "cnn_s"])
@pytest.mark.parametrize("variant", ["qdq_u8", "qdq_s8", "dynamic"])
def test_quantized_models_run_on_the_cpu_backend_and_match_onnxruntime(floats, tmp_path, cpu_target, name, variant):
    _on_cpu_as_onnxruntime(quantized(floats[name], str(tmp_path / f"{name}.onnx"), variant), seeds=(0, 1))


def _on_cpu_as_onnxruntime(path: str, seeds) -> None:
    """``path`` compiled, on the cpu backend (not the numpy fallback), within quantization
    tolerance of the reference (onnxruntime, or onnx.reference for the integer operators:
    tests/support/quantized.py) on each seed's inputs."""
    plan = nnos.compile(path)
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu", exe.choice
    for seed in seeds:
        feeds = input_feed(path, seed)
        for k, v in feeds.items():
            np.copyto(exe.inputs[k], v)
        exe.run()
        for o, want in zip(plan.graph.outputs, reference_outputs(path, feeds)):
            atol = TOLERANCE["quantized"] * max(1.0, float(np.max(np.abs(want))))
            np.testing.assert_allclose(exe.outputs[o], want, rtol=0, atol=atol)


@pytest.mark.parametrize("name,variant", [("act_s", "dynamic"), ("act_s", "qdq_s8"), ("res5_s", "qdq_u8"),
                                          ("mbv2_s", "qdq_u8")])
def test_quantized_torch_exports_match_onnxruntime(tmp_path, name, variant):
    """The zoo's torch exports (a transformer, residual and depthwise CNNs) quantized: compiled,
    on the cpu backend, within quantization tolerance of onnxruntime."""
    _on_cpu_as_onnxruntime(quantized(f"{ROOT}/models/zoo/{name}.onnx", str(tmp_path / f"{name}.onnx"), variant), seeds=(4,))
