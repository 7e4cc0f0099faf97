"""The cpu backend (one generated C function per plan) against the references: every generated
kernel against the numpy backend on graphs built here, the bundled models against
onnxruntime; generated code runs in a child process (a crash there fails the test with the
signal instead of killing the suite). Then every way it can fail — no compiler, a compiler
error, an unwritable cache, a foreign object in the cache, an op without a kernel — a clear
reason and the numpy backend."""
from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu.toolchain import find_compiler
from nnos.errors import BackendError
from tests.support.child import run_in_child
from tests.support.paths import ROOT
from tests.support.onnx_models import model, rand, save, vi

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C compiler here")
CARTPOLE = os.path.join(ROOT, "models", "cartpole", "cartpole.onnx")


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path_factory.getbasetemp() / "cpu-cache"))


def run_cpu_in_child(plan, feeds: dict) -> dict:
    """The cpu backend's outputs, computed in a forked child."""
    kind, got = run_in_child(plan, feeds)
    assert kind == "ran", got
    return got


def feeds_for(plan, seed=0):
    return {t.name: np.random.default_rng(seed).standard_normal(t.shape).astype(t.dtype) for t in plan.inputs}


def team_as_one(plan, one: dict) -> None:
    """The plan on a team (every CPU) computes bitwise what one thread did on feeds_for(plan)."""
    team = prepare(plan, "cpu")
    team.use_cpus([-1])
    for k, v in feeds_for(plan).items():
        np.copyto(team.inputs[k], v)
    team.run()
    assert all(np.array_equal(team.outputs[k], one[k]) for k in one)
    team.close()


def agree(plan, rtol=1e-4, atol=1e-5, seed=0):
    feeds = feeds_for(plan, seed)
    want = {k: np.array(v) for k, v in plan(feeds).items()}
    got = run_cpu_in_child(plan, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=k)
    return got


# --- generated kernels against the numpy backend ---------------------------------------------------
@pytest.mark.parametrize("m,k,n,bias", [(1, 8, 64, "row"), (1, 13, 37, "vec"), (3, 16, 5, "full"), (2, 7, 70, None),
                                        (1, 300, 3, "vec"), (5, 9, 45, "full")])
@pytest.mark.parametrize("act", [None, "Tanh", "Relu", "Sigmoid"])
def test_gemm(tmp_path, m, k, n, bias, act):
    inits = [("W", rand(k, n, seed=1))]
    ins = ["A", "W"]
    if bias:
        shape = {"row": (1, n), "vec": (n,), "full": (m, n)}[bias]
        inits.append(("C", rand(*shape, seed=2)))
        ins.append("C")
    nodes = [helper.make_node("Gemm", ins, ["Y" if act is None else "G"])]
    if act:
        nodes.append(helper.make_node(act, ["G"], ["Y"]))
    plan = nnos.compile(save(model(nodes, [vi("A", [m, k])], [vi("Y", [m, n])], inits), tmp_path / "g.onnx"))
    agree(plan)


@pytest.mark.parametrize("m,bias", [(2, "vec"), (3, "full"), (3, None)])
def test_a_small_batch_takes_its_rows_in_pairs(tmp_path, m, bias):
    """A batch of 2 or 3 rows split by column groups reads each weight once for two rows (gemm.py
    _pair_groups), the odd row by itself: both against the reference, and a team's bitwise one
    thread's (136 columns: two groups or more of four vectors at 8 and 16 floats, and a tail;
    K = 128: enough work that the team splits it, team.SPLIT_WORK)."""
    k, n = 128, 136
    inits, ins = [("W", rand(k, n, seed=1))], ["A", "W"]
    if bias:
        inits.append(("C", rand(*((n,) if bias == "vec" else (m, n)), seed=2)))
        ins.append("C")
    nodes = [helper.make_node("Gemm", ins, ["G"]), helper.make_node("Relu", ["G"], ["Y"])]
    plan = nnos.compile(save(model(nodes, [vi("A", [m, k])], [vi("Y", [m, n])], inits), tmp_path / "g.onnx"))
    team_as_one(plan, agree(plan))


def test_matmul_and_elementwise(tmp_path):
    nodes = [helper.make_node("MatMul", ["A", "W"], ["M"]), helper.make_node("Add", ["M", "B"], ["S"]),
             helper.make_node("Mul", ["S", "B"], ["P"]), helper.make_node("Sub", ["P", "M"], ["D"]),
             helper.make_node("Div", ["D", "B"], ["Q"]), helper.make_node("Sigmoid", ["Q"], ["Y"])]
    m = model(nodes, [vi("A", [4, 9]), vi("B", [4, 21])], [vi("Y", [4, 21])], [("W", rand(9, 21, seed=3))])
    agree(nnos.compile(save(m, tmp_path / "mm.onnx")))


@pytest.mark.parametrize("qs,ks", [
    ([2, 4, 10, 16], [2, 4, 16, 10]),        # attention scores: heads × (seq × dim)·(dim × seq)
    ([2, 4, 10, 10], [1, 4, 10, 37]),        # AV, B broadcast over the batch, N not a vector multiple
    ([10, 48], [3, 48, 64]),                 # A broadcast over B's batch
    ([2, 4, 65, 8], [2, 4, 8, 65]),          # act_s's QKᵀ: K = 8, a column after the vectors
    ([1, 2, 9, 72], [1, 2, 72, 65]),         # a B past PADDED_COPY: read where it is
])
def test_batched_matmul_of_computed_operands(tmp_path, cpu_target, qs, ks):
    """Both operands computed (a Relu in front of each): the fast row form once per batch entry,
    with a Tanh applied in registers; a team's rows bitwise one thread's. A B whose rows are not
    whole vectors is copied to padded rows first (up to PADDED_COPY bytes), its last columns a
    vector too."""
    out = list(np.broadcast_shapes(tuple(qs[:-2]), tuple(ks[:-2]))) + [qs[-2], ks[-1]]
    nodes = [helper.make_node("Relu", ["Q"], ["Qr"]), helper.make_node("Relu", ["K"], ["Kr"]),
             helper.make_node("MatMul", ["Qr", "Kr"], ["S"]), helper.make_node("Tanh", ["S"], ["Y"])]
    m = model(nodes, [vi("Q", qs), vi("K", ks)], [vi("Y", out)], [])
    plan = nnos.compile(save(m, tmp_path / "bmm.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)                  # the row form (or the narrow one), not the generic scalar loops
    assert "const float *ar = A + m *" in src or "A[(m0 + 0) *" in src
    from nnos.backends.cpu import width
    from nnos.backends.cpu.gemm import PADDED_COPY
    vw, (k, n) = width(), ks[-2:]
    assert ("B = Bp; }" in src) == (n % vw != 0 and n >= vw and k * -(-n // vw) * vw * 4 <= PADDED_COPY)
    team_as_one(plan, agree(plan))


@pytest.mark.parametrize("qs,ks", [
    ([4, 65, 65], [4, 65, 8]),               # AV with heads of 8: vectors of 8, blocks of eight rows and a tail row
    ([4, 20, 65], [4, 65, 8]),               # the decoder's: two blocks and a tail block of four rows
    ([2, 11, 9], [2, 9, 8]),                 # a tail block of three rows: a pair stored as one vector, one alone
    ([3, 10, 6], [3, 6, 8]),                 # AVX-512: an even K (no last value alone), a tail block of two rows
    ([3, 7, 5], [3, 5, 7]),                  # seven columns: a vector of 4 and three single ones
    ([2, 9, 6], [2, 6, 4]),                  # four columns
])
def test_products_narrower_than_a_vector(tmp_path, cpu_target, qs, ks):
    """A product with 4 ≤ N < the vector width (an attention head of 8 under AVX-512) in narrower
    vectors, eight rows at a time (it ran as scalar loops: 18 % of act_s; four rows at a time
    were chains of FMAs waiting on each other), the rows after the last block one block; an
    8-column chunk stored as a vector (AVX2); on AVX-512 eight columns take two values of K a
    vector, two rows stored as one; on one CPU and on a team, bitwise the same."""
    from nnos.backends.cpu import source
    nodes = [helper.make_node("Relu", ["Q"], ["Qr"]), helper.make_node("MatMul", ["Qr", "K"], ["S"]),
             helper.make_node("Tanh", ["S"], ["Y"])]
    m = model(nodes, [vi("Q", qs), vi("K", ks)], [vi("Y", qs[:-1] + ks[-1:])], [])
    plan = nnos.compile(save(m, tmp_path / "narrow.onnx"))
    src = source(plan)
    vw = prog_width()
    pairs = ks[-1] == 8 and vw == 16                               # two values of K a 16-float vector
    if ks[-1] < vw and not pairs:
        assert "vload4(B + kk *" in src or "vload8(B + kk *" in src
        assert "acc7 += A[(m0 + 7) *" in src                      # eight rows a block
    if pairs:
        assert "vpairs_of(vload(B + kk * 8))" in src and "acc7 += vpair(A + (m0 + 7) *" in src
        assert ("vpair_last(A[(m0 + 0)" in src) == bool(ks[-2] % 2)   # an odd K's last value
    if ks[-1] == 8 and vw in (8, 16):                              # stored as vectors, the Tanh in registers
        assert ("vtanh(vpairs_sum(acc0, acc1))" if vw == 16 else "vtanh(acc0)") in src
    team_as_one(plan, agree(plan))


def test_infinities_in_a_narrow_product_stay_infinities(tmp_path, cpu_target):
    """An infinite A[r][k] gives ±∞ in row r, as the reference's: no lane multiplies it by a
    padding zero (AVX-512's two values of K a vector, an odd K's last value alone)."""
    nodes = [helper.make_node("MatMul", ["Q", "K"], ["Y"])]
    m = model(nodes, [vi("Q", [2, 11, 9]), vi("K", [2, 9, 8])], [vi("Y", [2, 11, 8])], [])
    plan = nnos.compile(save(m, tmp_path / "inf.onnx"))
    rng = np.random.default_rng(4)
    feeds = {"Q": rng.random((2, 11, 9)).astype(np.float32),
             "K": (rng.random((2, 9, 8)) + 0.5).astype(np.float32)}
    feeds["Q"][0, 3, 8] = np.inf                 # the odd K's last value
    feeds["Q"][1, 10, 0] = -np.inf               # a pair's even value, the tail row
    want = plan(feeds)["Y"]
    assert np.isinf(want[0, 3]).all() and np.isinf(want[1, 10]).all()
    got = run_cpu_in_child(plan, feeds)["Y"]
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int64"])
@pytest.mark.parametrize("shape,perm,runs", [([3, 65, 32], [1, 0, 2], True),       # attention's heads: runs of 32
                                             ([65, 4, 8], [1, 0, 2], True),        # runs of 8
                                             ([5, 6, 3], [1, 0, 2], False),        # runs of 3: element by element
                                             ([4, 8, 65], [0, 2, 1], False)])      # the last axis moves
def test_a_transpose_keeping_the_last_axis_copies_runs(tmp_path, dtype, shape, perm, runs):
    """A transpose whose innermost axis stays innermost copies each run with one memcpy of a
    constant size (vector moves); shorter runs, or a moved last axis, element by element —
    bitwise numpy's transpose either way, for any element size."""
    from onnx import TensorProto
    from nnos.backends.cpu import source
    t = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int64": TensorProto.INT64}[dtype]
    out = [shape[p] for p in perm]
    m = model([helper.make_node("Transpose", ["X"], ["Y"], perm=perm)], [vi("X", shape, t)], [vi("Y", out, t)], [])
    plan = nnos.compile(save(m, tmp_path / "t.onnx"))
    body = source(plan)
    body = body[body.index("/* step 0"):]
    assert ("memcpy(" in body) == runs
    x = (np.arange(np.prod(shape)) % 251).astype(dtype).reshape(shape)
    assert np.array_equal(run_cpu_in_child(plan, {"X": x})["Y"], x.transpose(perm))


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("shape,perm,tiled", [([4, 65, 8], [0, 2, 1], True),     # attention's Kᵀ: a row of tiles,
                                                                                 # a last column one at a time
                                              ([32, 64], [1, 0], True),          # whole tiles
                                              ([3, 19, 21], [0, 2, 1], True),    # edges on both sides
                                              ([2, 7, 40], [0, 2, 1], False)])   # 7 < 8: element by element
def test_a_transpose_of_its_last_two_axes_goes_by_tiles(tmp_path, cpu_target, dtype, shape, perm, tiled):
    """Four-byte values whose last two axes swap go by 8 × 8 tiles transposed in registers,
    the edges value by value — bitwise numpy's transpose, on every target."""
    from onnx import TensorProto
    from nnos.backends.cpu import source
    t = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32}[dtype]
    out = [shape[p] for p in perm]
    m = model([helper.make_node("Transpose", ["X"], ["Y"], perm=perm)], [vi("X", shape, t)], [vi("Y", out, t)], [])
    plan = nnos.compile(save(m, tmp_path / "t.onnx"))
    body = source(plan)
    assert ("nnos_transpose8(" in body[body.index("/* step 0"):]) == tiled
    x = (np.arange(np.prod(shape)) * 7 % 1009 - 500).astype(dtype).reshape(shape)
    assert np.array_equal(run_cpu_in_child(plan, {"X": x})["Y"], x.transpose(perm))


@pytest.mark.parametrize("target", ["native", "x86-64-v3", "x86-64-v2"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("hw,same,batch,winograd", [(12, True, 1, 2), (10, False, 2, 2), (9, True, 1, 2), (0, False, 1, 0)])
def test_convolutions_by_winograd(tmp_path, monkeypatch, target, k, hw, same, batch, winograd):
    """A residual block's two k×k convolutions at stride 1 (act_s's 3×3, res5_s's 5×5):
    F(2×2, k×k) from an NCHW input into a channel-blocked output (ReLU in registers), then from
    that into NCHW with the residual Add and ReLU after; padded ("same") and not, two images; an
    odd output size (a last tile row and column half outside); 2×2 outputs (one tile: the direct
    form). Within float32 tolerance of the reference on 16-, 8- and 4-float vectors, and a
    team's tile rows bitwise one thread's."""
    from nnos.backends.cpu import source
    from nnos.backends.cpu.toolchain import TARGETS, cpu_features
    if target != "native":
        if TARGETS[target][0] != os.uname().machine or TARGETS[target][2] - cpu_features():
            pytest.skip(f"this CPU cannot run {target}")
        monkeypatch.setenv("NNOS_CPU_TARGET", target)
    c, pad = 32, k // 2 if same else 0
    hw = hw or k + 1                            # 0: 2×2 outputs
    out = hw + 2 * pad - k + 1
    nodes = [helper.make_node("Conv", ["X", "W1", "b1"], ["A"], kernel_shape=[k, k], pads=[pad] * 4),
             helper.make_node("Relu", ["A"], ["A1"]),
             helper.make_node("Conv", ["A1", "W2", "b2"], ["B"], kernel_shape=[k, k], pads=[k // 2] * 4),
             helper.make_node("Slice", ["X", "s0", "s1", "ax"], ["Xc"]),
             helper.make_node("Add", ["B", "Xc"], ["C"]), helper.make_node("Relu", ["C"], ["Y"])]
    inits = [("W1", rand(c, c, k, k, seed=1) * 0.6 / k), ("b1", rand(c, seed=2)), ("W2", rand(c, c, k, k, seed=3) * 0.6 / k),
             ("b2", rand(c, seed=4)), ("s0", np.array([0, 0], np.int64)), ("s1", np.array([out, out], np.int64)),
             ("ax", np.array([2, 3], np.int64))]
    m = model(nodes, [vi("X", [batch, c, hw, hw])], [vi("Y", [batch, c, out, out])], inits)
    plan = nnos.compile(save(m, tmp_path / "res.onnx"))
    assert source(plan).count("vf m15 = vload(Ms") == winograd
    team_as_one(plan, agree(plan, atol=1e-4))   # outputs of a few units: float32's rounding of their sums


def prog_width() -> int:
    from nnos.backends.cpu import width
    return width()


@pytest.mark.parametrize("op,attrs", [("Exp", {}), ("Erf", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"})])
def test_vector_exp_erf_and_gelu_over_their_whole_range(tmp_path, cpu_target, op, attrs):
    """The prelude's vexp and verf (polynomials, not libm) over ±100, the overflow and underflow
    edges, infinities and NaN: within 4 float32 ulp of numpy's (float64 for erf), NaN kept — on
    each target (AVX-512's masked moves and AVX2's blends for exp's edges and the selects)."""
    import math
    edges = [88.72, 88.73, 88.72283935546875, -87.33, -87.34, -87.3365478515625]     # the 3rd and 6th: vexp's clamps
    x = np.concatenate([np.linspace(-100, 100, 8000), np.linspace(-5, 5, 8000), edges,
                        [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, 3.9, 4.1]]).astype(np.float32)
    x = np.concatenate([x, np.zeros((-len(x)) % 16, np.float32)]).reshape(1, -1)
    m = model([helper.make_node(op, ["X"], ["Y"], **attrs)], [vi("X", list(x.shape))], [vi("Y", list(x.shape))], [],
              opset=20)
    plan = nnos.compile(save(m, tmp_path / "f.onnx"))
    got = run_cpu_in_child(plan, {"X": x})["Y"].astype(np.float64)
    xd = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    want = {"Exp": lambda: np.exp(xd), "Erf": lambda: erf(xd),
            "Gelu": lambda: (0.5 * xd * (1 + erf(xd / math.sqrt(2))) if not attrs else
                             0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd ** 3))))}[op]()
    with np.errstate(invalid="ignore", over="ignore"):
        want = want.astype(np.float32).astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=4 * 2.0 ** -23, atol=1e-37 if op == "Exp" else 1e-6)


def test_relu_clip_max_and_min_keep_nan_on_every_target(tmp_path, cpu_target):
    """The prelude's vrelu, vmaxnan and vminnan (on x86 one maxps or minps, the bound first:
    lo > x ? lo : x) give numpy's values on each target: a NaN stays a NaN (the bound second
    would send it to the bound), infinities, zeros of either sign, denormals and values beside
    the bounds as they are — vectors and the scalar tail."""
    special = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 6.0, -6.0, 5.999999, 6.000001, 1e-45, -1e-45]
    x = np.concatenate([special, np.linspace(-8, 8, 64 + 13)]).astype(np.float32).reshape(1, -1)
    nodes = [helper.make_node("Relu", ["X"], ["R"]), helper.make_node("Clip", ["X", "lo", "hi"], ["C"]),
             helper.make_node("Max", ["X", "lo"], ["M"]), helper.make_node("Min", ["X", "hi"], ["N"])]
    inits = [("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32))]
    outs = [vi(n, list(x.shape)) for n in "RCMN"]
    plan = nnos.compile(save(model(nodes, [vi("X", list(x.shape))], outs, inits), tmp_path / "clip.onnx"))
    got = run_cpu_in_child(plan, {"X": x})
    with np.errstate(invalid="ignore"):
        want = {"R": np.maximum(x, np.float32(0)), "C": np.clip(x, np.float32(0), np.float32(6)),
                "M": np.maximum(x, np.float32(0)), "N": np.minimum(x, np.float32(6))}
    for k, w in want.items():
        np.testing.assert_array_equal(got[k], w, err_msg=k)      # NaN where numpy has NaN, the rest equal


@pytest.mark.parametrize("w_shape", [[32, 72], [2, 32, 72]])
def test_a_linear_layer_s_bias_and_gelu_run_inside_the_product(tmp_path, w_shape):
    """A transformer's Linear as exported: MatMul of [1, T, D] by a constant (or per-head
    computed) B, Add a bias row, Gelu — the bias starts the accumulators, the Gelu is applied in
    registers: no pass of scalar erff after the product — a group's four accumulators' GELUs in
    two passes (elementwise.stores)."""
    nodes = [helper.make_node("MatMul", ["X", "W"], ["M"]), helper.make_node("Add", ["M", "B"], ["A"]),
             helper.make_node("Gelu", ["A"], ["Y"])]
    inits = [("B", rand(72, seed=2))]
    if len(w_shape) == 2:
        inits.append(("W", rand(*w_shape, seed=1) * 0.2))
        ins = [vi("X", [1, 65, 32])]
    else:
        nodes.insert(0, helper.make_node("Relu", ["V"], ["W"]))
        ins = [vi("X", [1, 65, 32]), vi("V", w_shape)]
    out = [2, 65, 72] if len(w_shape) == 3 else [1, 65, 72]
    m = model(nodes, ins, [vi("Y", out)], inits, opset=20)
    plan = nnos.compile(save(m, tmp_path / "lin.onnx"))
    assert [e.op for e in plan.graph.nodes[-1].epilogue] == ["Add", "Gelu"]
    from nnos.backends.cpu import source
    src = source(plan)
    body = src[src.index("/* step 0"):]
    assert "const float *C = " in body and "ga3_ = vgelu_arg(gx3_);" in body
    agree(plan)


@pytest.mark.parametrize("op,shape,axis,bias", [("LayerNormalization", [2, 65, 32], -1, True),
                                                ("LayerNormalization", [3, 4, 5, 7], 2, False),
                                                ("RMSNormalization", [1, 20, 48], -1, False),
                                                ("LayerNormalization", [2, 129, 64], -1, True)])   # split on a team
def test_row_normalizations_in_vectors(tmp_path, cpu_target, op, shape, axis, bias):
    """A transformer's LayerNorm (and RMSNorm) over the last axis or the last few: the vector row
    form, four rows at a time and the rows after the last four one at a time, against the
    reference; rows shorter than a vector take the scalar tail; a team's rows bitwise one
    thread's."""
    row = shape[axis:]
    inits = [("S", rand(*row, seed=3))] + ([("B", rand(*row, seed=4))] if bias else [])
    node = helper.make_node(op, ["X", "S"] + (["B"] if bias else []), ["Y"], axis=axis, epsilon=1e-5)
    m = model([node], [vi("X", shape)], [vi("Y", shape)], inits, opset=23)
    plan = nnos.compile(save(m, tmp_path / "ln.onnx"))
    from nnos.backends.cpu import source
    assert "const float *Sc = " in source(plan)
    team_as_one(plan, agree(plan))


def _clip6(x, y):
    return helper.make_node("Clip", [x, "zero", "six"], [y])


@pytest.mark.parametrize("c,hw,kernel,stride,dil,blocked", [
    (32, 12, 3, 1, 1, True),      # MobileNet's 3×3, channel-blocked from the 1×1 before to the 1×1 after
    (32, 13, 5, 2, 1, True),      # 5×5 at stride 2, odd size
    (24, 10, 3, 2, 1, False),     # channels not a multiple of the vector: NCHW, a part-filled last block
    (16, 9, 3, 1, 2, True),       # dilated
])
def test_depthwise_conv(tmp_path, c, hw, kernel, stride, dil, blocked):
    """Depthwise convolutions with ReLU6 (Clip with constant bounds, applied in registers),
    between 1×1 convolutions (blocked layouts when the channels fill vectors) or alone."""
    pad = dil * (kernel // 2)
    out = (hw + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
    dw = [helper.make_node("Conv", ["E", "Wd", "Bd"], ["D"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                           pads=[pad] * 4, dilations=[dil, dil], group=c), _clip6("D", "Dr")]
    inits = [("Wd", rand(c, 1, kernel, kernel, seed=4) * 0.3), ("Bd", rand(c, seed=5)), ("zero", np.float32(0)),
             ("six", np.float32(6))]
    if blocked:
        nodes = [helper.make_node("Conv", ["X", "We"], ["Ec"], kernel_shape=[1, 1]), _clip6("Ec", "E"), *dw,
                 helper.make_node("Conv", ["Dr", "Wp"], ["Y"], kernel_shape=[1, 1])]
        inits += [("We", rand(c, 8, 1, 1, seed=6) * 0.5), ("Wp", rand(8, c, 1, 1, seed=7) * 0.3)]
        m = model(nodes, [vi("X", [1, 8, hw, hw])], [vi("Y", [1, 8, out, out])], inits)
    else:
        dw[0].input[0] = "X"
        dw[1].output[0] = "Y"
        m = model(dw, [vi("X", [1, c, hw, hw])], [vi("Y", [1, c, out, out])], inits)
    plan = nnos.compile(save(m, tmp_path / "dw.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    assert "const float *Wd = " in src and "vminnan(vmaxnan(" in src         # the depthwise kernel, ReLU6 fused
    agree(plan)


@pytest.mark.parametrize("vw", [4, 8, 16])
@pytest.mark.parametrize("group", [1, 20])
def test_nchw_tiles_move_by_vector_transposes(tmp_path, monkeypatch, vw, group):
    """A convolution between NCHW tensors (a graph's input and output) moves its tiles with
    in-register transposes (prelude's vtranspose): a depthwise one at stride 3 reads its input
    that way, both store their output that way. 20 channels leave a part-filled last block at 8
    and 16 lanes, a width of 21 a row's tail at every width; both still one value at a time."""
    if vw == 16 and prog_width() < 16:
        pytest.skip("this CPU has no 16-float vectors")
    monkeypatch.setenv("NNOS_CPU_VECTOR", str(vw))
    stride = 3 if group > 1 else 1                 # at stride 1 or 2 a depthwise one goes along rows (below)
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["Y"], kernel_shape=[3, 3], pads=[1] * 4, group=group,
                              strides=[stride, stride])]
    inits = [("W", rand(20, 20 // group, 3, 3, seed=11) * 0.3), ("B", rand(20, seed=12))]
    m = model(nodes, [vi("X", [2, 20, 9, 21])], [vi("Y", [2, 20, 8 // stride + 1, 20 // stride + 1])], inits)
    plan = nnos.compile(save(m, tmp_path / "nchw.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    assert f"#define NNOS_VW {vw}" in src and "vtranspose(t);" in src
    assert ("vload(s + " in src) == (group > 1)                  # the depthwise input's transpose
    agree(plan)


@pytest.mark.parametrize("vw", [4, 8, 16])
@pytest.mark.parametrize("c,h,wd,kernel,stride,dil,batch", [
    (20, 9, 21, 3, 1, 1, 2),     # a row's tail at every width, two images
    (6, 8, 16, 5, 1, 1, 1),      # 5×5, rows of whole vectors at 4, 8 and 16 lanes
    (5, 7, 12, 3, 1, 2, 1),      # dilated; at 16 lanes a row shorter than a vector: the channel-lane form
    (20, 11, 33, 3, 2, 1, 2),    # stride 2: the even lanes of two loads; 17 a row, a tail at every width
    (6, 10, 32, 5, 2, 1, 1),     # 5×5 at stride 2, rows of whole vectors at 4, 8 and 16 lanes
])
def test_a_depthwise_conv_between_nchw_tensors_goes_along_rows(tmp_path, monkeypatch, vw, c, h, wd, kernel, stride,
                                                               dil, batch):
    """NCHW in and out at stride 1 or 2 (a QDQ model's depthwise convolution between its
    roundings): vectors of a row's pixels at a time, no transposes; ReLU6 in registers; on a team
    of every CPU bitwise what one thread computes."""
    if vw == 16 and prog_width() < 16:
        pytest.skip("this CPU has no 16-float vectors")
    monkeypatch.setenv("NNOS_CPU_VECTOR", str(vw))
    pad = dil * (kernel // 2)
    oh, ow = (h - 1) // stride + 1, (wd - 1) // stride + 1
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["D"], kernel_shape=[kernel, kernel], pads=[pad] * 4,
                              strides=[stride, stride], dilations=[dil, dil], group=c), _clip6("D", "Y")]
    inits = [("W", rand(c, 1, kernel, kernel, seed=13) * 0.3), ("B", rand(c, seed=14)), ("zero", np.float32(0)),
             ("six", np.float32(6))]
    m = model(nodes, [vi("X", [batch, c, h, wd])], [vi("Y", [batch, c, oh, ow])], inits)
    plan = nnos.compile(save(m, tmp_path / "dwrows.onnx"))
    from nnos.backends.cpu import source
    src = source(plan)
    rows = ow >= vw
    assert ("nnos_evens(xr + " in src) == (rows and stride == 2)
    assert ("const vf k0 = vsplat(" in src) == rows                       # the taps' weights, splat
    assert ("vtranspose(t);" in src) == (not rows)
    assert "vminnan(vmaxnan(" in src                                        # ReLU6 fused
    team_as_one(plan, agree(plan))


@pytest.mark.parametrize("hw", [(7, 7), (9, 21)])
def test_a_residual_add_after_a_depthwise_conv(tmp_path, hw):
    """An epilogue that reads another tensor (the block's input) is applied after the kernel:
    the channel-lane form (rows of 7) and the row form (rows of 21)."""
    nodes = [helper.make_node("Conv", ["X", "Wd"], ["D"], kernel_shape=[3, 3], pads=[1] * 4, group=16),
             helper.make_node("Add", ["D", "X"], ["Y"])]
    m = model(nodes, [vi("X", [2, 16, *hw])], [vi("Y", [2, 16, *hw])], [("Wd", rand(16, 1, 3, 3, seed=8))])
    plan = nnos.compile(save(m, tmp_path / "dwres.onnx"))
    from nnos.backends.cpu import source
    assert ("const vf k0 = vsplat(" in source(plan)) == (hw[1] >= prog_width())
    agree(plan)


@pytest.mark.parametrize("c,oc,hw,kernel,stride,pad,dil,batch", [
    (3, 16, 16, 5, 2, 2, 1, 1),      # the first layer of cnn_s
    (5, 7, 9, 3, 1, 1, 1, 1),        # channels not a multiple of the vector
    (4, 20, 11, 3, 2, 0, 1, 2),      # no padding, batch 2, a ragged last row block
    (2, 8, 10, 3, 1, 2, 2, 1),       # dilated
    (6, 33, 7, 1, 1, 0, 1, 1),       # 1×1
    (4, 16, 13, 4, 3, 1, 1, 1),      # stride 3, even kernel
])
def test_conv(tmp_path, c, oc, hw, kernel, stride, pad, dil, batch):
    x = vi("X", [batch, c, hw, hw])
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["C"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                              pads=[pad] * 4, dilations=[dil, dil]),
             helper.make_node("Relu", ["C"], ["Y"])]
    inits = [("W", rand(oc, c, kernel, kernel, seed=4) * 0.3), ("B", rand(oc, seed=5))]
    out = (hw + 2 * pad - dil * (kernel - 1) - 1) // stride + 1
    m = model(nodes, [x], [vi("Y", [batch, oc, out, out])], inits)
    agree(nnos.compile(save(m, tmp_path / "c.onnx")))


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru(tmp_path, lbr):
    t, i, h = 3, 10, 20
    nodes = [helper.make_node("GRU", ["X", "W", "R", "B", "", "H0"], ["Y", "YH"], hidden_size=h,
                              linear_before_reset=lbr)]
    inits = [("W", rand(1, 3 * h, i, seed=6) * 0.4), ("R", rand(1, 3 * h, h, seed=7) * 0.4),
             ("B", rand(1, 6 * h, seed=8) * 0.2)]
    m = model(nodes, [vi("X", [t, 1, i]), vi("H0", [1, 1, h])], [vi("Y", [t, 1, 1, h]), vi("YH", [1, 1, h])], inits)
    agree(nnos.compile(save(m, tmp_path / "gru.onnx")))


# --- the bundled models against onnxruntime ---------------------------------------------------------
@pytest.mark.parametrize("name", ["mlp_s", "mlp_m", "cnn_s", "gru_s", "cnn_l", "cartpole"])
def test_bundled_models_match_onnxruntime(name, zoo):
    path = CARTPOLE if name == "cartpole" else zoo[name]
    plan = nnos.compile(path)
    feeds = feeds_for(plan, 11)
    got = run_cpu_in_child(plan, feeds)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for k, v in got.items():
        np.testing.assert_allclose(v, want[k], rtol=1e-4, atol=1e-5, err_msg=f"{name}:{k}")


def test_a_nan_in_is_a_nan_out(zoo):
    """No -ffast-math: relu and tanh propagate NaN, so the loop's finite check still sees it."""
    for name in ("mlp_s", "cnn_s"):
        plan = nnos.compile(zoo[name])
        feeds = feeds_for(plan)
        first = next(iter(feeds))
        feeds[first].reshape(-1)[0] = np.nan
        out = run_cpu_in_child(plan, feeds)
        assert any(np.isnan(v).any() for v in out.values()), name


def test_one_native_call_per_run_and_no_allocation(zoo):
    from tests.support.alloc import peak_bytes
    plan = nnos.compile(zoo["mlp_s"])
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    assert exe.facts["vector_floats"] in (4, 8, 16)
    peak = peak_bytes(exe.run, 2000)
    assert peak < 2048, peak


def test_every_weight_the_object_reads_starts_on_a_cache_line(zoo):
    """The w[] table's arrays — the plan's weights and their repacked copies — each start on a
    64-byte boundary, for a plan compiled in memory (its weights numpy's, 16-byte aligned) too:
    regression, a 65×32×128 product ran 1.8× slower with every vector load split in two lines."""
    from nnos.backends.cpu import source_and_program
    plan = nnos.compile(zoo["cnn_s"])
    made = source_and_program(plan)[1].consts          # aligned as the generator makes them (not all
    assert made and all(c.ctypes.data % 64 == 0 for c in made)     # copied at once when bound)
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    starts = [c.ctypes.data for c in exe._consts]
    assert starts and all(a % 64 == 0 for a in starts), [a % 64 for a in starts]
    assert list(exe._table) == starts                    # the table points at those, not at freed copies


# --- every failure: a reason, and numpy ---------------------------------------------------------------
def test_running_again_on_the_same_inputs_gives_the_same_outputs(zoo):
    """Regression: a step reused a graph input's bytes, so a second run on inputs not written
    again (a camera frame between new frames) computed from garbage; the backend's own check
    now replays, and a backend that changes what it was given is refused with the reason."""
    from nnos.backends import module, verify
    plan = nnos.compile(zoo["mlp_m"])
    exe = module("cpu").prepare(plan)
    x = feeds_for(plan)["obs"]
    np.copyto(exe.inputs["obs"], x)
    exe.run()
    first = exe.outputs["action"].copy()
    exe.run()
    assert np.array_equal(exe.inputs["obs"], x) and np.array_equal(exe.outputs["action"], first)
    verify.against_reference(plan, exe)
    leaky = module("cpu").prepare(plan)
    real = leaky.run

    def scribbles():                       # what the planner's bug did: the input changed by a run
        real()
        leaky.inputs["obs"][..., 0] += 1.0
    leaky.run = scribbles
    with pytest.raises(verify.VerifyError, match="changed when run again on the same inputs"):
        verify.against_reference(plan, leaky)


def test_a_large_plan_is_built_at_o2_with_unrolled_loops(zoo):
    """gcc -O3 on a 1 900-line plan took 4 s; above LARGE_SOURCE_LINES the plan builds at -O2
    -funroll-loops (the flags are part of the cache key), a small one at -O3."""
    from nnos.backends.cpu.toolchain import LARGE_SOURCE_LINES
    big = nnos.compile(os.path.join(ROOT, "models", "zoo", "act_s.onnx"))
    small = nnos.compile(zoo["mlp_s"])
    from nnos.backends.cpu import source
    assert source(big).count("\n") >= LARGE_SOURCE_LINES > source(small).count("\n")
    fb, fs = prepare(big, "cpu").facts["flags"], prepare(small, "cpu").facts["flags"]
    assert "-O2" in fb and "-funroll-loops" in fb and "-O3" not in fb
    assert "-O3" in fs and "-O2" not in fs


def test_every_reference_op_has_a_generated_kernel():
    from nnos.backends.cpu.emitters import EMITTERS
    from nnos.ops import OPS
    planned = set(OPS) - {"CastLike"}                  # a Cast by the time a plan holds it (passes/infer.py)
    assert planned <= set(EMITTERS), sorted(planned - set(EMITTERS))


def test_an_op_without_a_kernel_falls_back_with_its_name(tmp_path, monkeypatch):
    """An op the reference gains before the generator does: named, and numpy runs the plan."""
    from nnos.backends.cpu import emitters as kernels
    monkeypatch.delitem(kernels.EMITTERS, "Transpose")
    m = model([helper.make_node("Transpose", ["X"], ["Y"], perm=[1, 0])], [vi("X", [3, 10])], [vi("Y", [10, 3])])
    plan = nnos.compile(save(m, tmp_path / "tr.onnx"))
    exe = prepare(plan, "auto")
    assert exe.backend == "numpy"
    assert "Transpose" in exe.choice["passed_over"]["cpu"]
    with pytest.raises(BackendError, match="no generated kernel for Transpose"):
        prepare(plan, "cpu")


def test_no_compiler(monkeypatch, zoo):
    monkeypatch.setenv("NNOS_CC", "/nonexistent/cc")
    plan = nnos.compile(zoo["mlp_s"])
    exe = prepare(plan, "auto")
    assert exe.backend == "numpy"
    assert "no C compiler" in exe.choice["passed_over"]["cpu"]
    with pytest.raises(BackendError, match="no C compiler"):
        prepare(plan, "cpu")


def test_the_compiler_is_found_as_shutil_finds_it_without_importing_it(tmp_path, monkeypatch):
    """find_compiler runs on a device's way to its first tick (auto asks every backend whether
    it can run): shutil.which's answers, without shutil's import."""
    import shutil
    import subprocess
    import sys
    from nnos.backends.cpu.toolchain import which
    exe = tmp_path / "bin" / "mycc"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (tmp_path / "bin" / "notexec").write_text("")
    (tmp_path / "bin" / "adir").mkdir()
    monkeypatch.setenv("PATH", f"/nonexistent:{tmp_path / 'bin'}:/usr/bin")
    for name in ("mycc", "notexec", "adir", "sh", "no-such-cc", str(exe), str(tmp_path / "bin" / "notexec"),
                 "/nonexistent/cc"):
        assert which(name) == shutil.which(name), name
    code = ("import sys; from nnos.backends.cpu.toolchain import find_compiler; find_compiler(); "
            "print('shutil' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False", r.stdout


def test_a_compiler_error_is_reported(tmp_path, monkeypatch, zoo):
    fake = tmp_path / "badcc"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'badcc 1.0'; exit 0; }\n"
                    "echo 'plan.c:1: error: out of cheese' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NNOS_CC", str(fake))
    plan = nnos.compile(zoo["mlp_s"])
    exe = prepare(plan, "auto")
    assert exe.backend == "numpy"
    assert "out of cheese" in exe.choice["passed_over"]["cpu"]


def test_an_unwritable_cache(tmp_path, monkeypatch, zoo):
    if os.geteuid() == 0:
        ro = "/proc/nnos-cache"               # root writes through mode bits: a place nobody can
    else:
        ro = str(tmp_path / "ro")
        os.makedirs(ro)
        os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setenv("NNOS_CPU_CACHE", ro)
    plan = nnos.compile(zoo["mlp_s"])
    exe = prepare(plan, "auto")
    assert exe.backend == "numpy", exe.choice
    assert "not writable" in exe.choice["passed_over"]["cpu"], exe.choice


def test_a_foreign_object_in_the_cache_is_never_loaded(tmp_path, monkeypatch, zoo):
    import subprocess
    import sys

    from nnos.backends.cpu import source
    from nnos.backends.cpu.toolchain import _key, object_path
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path / "cache"))
    a = nnos.compile(zoo["mlp_s"])
    a.save(str(tmp_path / "a.nnos"))
    r = subprocess.run([sys.executable, "-m", "nnos.backends.cpu", "build", str(tmp_path / "a.nnos")],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == object_path(_key(source(a))[3]), r.stderr   # built elsewhere
    b = nnos.compile(zoo["mlp_m"])
    assert not prepare(b, "cpu").facts["cached"]
    assert prepare(b, "cpu").facts["cached"]
    # b's object where a's belongs (a stale or tampered cache), before this process ever loaded a's
    shutil.copy(object_path(_key(source(b))[3]), object_path(_key(source(a))[3]) + ".tmp")
    os.replace(object_path(_key(source(a))[3]) + ".tmp", object_path(_key(source(a))[3]))
    foreign = open(object_path(_key(source(a))[3]), "rb").read()
    exe = prepare(a, "auto")            # never loaded: removed, compiled again, and that one runs
    assert exe.backend == "cpu", exe.facts
    assert "stale or foreign" in exe.facts["replaced"], exe.facts
    assert open(exe.facts["object"], "rb").read() != foreign
    feeds = feeds_for(a)
    for k, v in feeds.items():
        np.copyto(exe.inputs[k], v)
    exe.run()
    np.testing.assert_allclose(exe.outputs["action"], a(feeds)["action"], rtol=1e-4, atol=1e-5)


def test_an_object_cut_short_by_a_power_loss_is_compiled_again(tmp_path, monkeypatch, zoo):
    from nnos.backends.cpu import source
    from nnos.backends.cpu.toolchain import _key, object_path
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path / "cache"))
    plan = nnos.compile(zoo["mlp_m"])
    path = object_path(_key(source(plan))[3])
    agree(plan)                                   # built (in a child) and cached
    whole = open(path, "rb").read()
    with open(path, "wb") as f:                   # what a power cut before the fsync can leave
        f.write(whole[: len(whole) // 3])
    exe = prepare(plan, "auto")
    assert exe.backend == "cpu", exe.facts
    assert exe.facts.get("replaced"), exe.facts
    assert os.path.getsize(path) == len(whole)


def test_a_full_cache_falls_back_with_the_reason(tmp_path, monkeypatch, zoo):
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    d = tmp_path / "full"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(d)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        monkeypatch.setenv("NNOS_CPU_CACHE", str(d))
        plan = nnos.compile(zoo["cnn_s"])
        exe = prepare(plan, "auto")
        assert exe.backend == "numpy", exe.choice
        why = exe.choice["passed_over"]["cpu"]
        assert "No space left on device" in why or "not writable" in why, why
        with pytest.raises(BackendError, match="cpu-cache|full|space|writable"):
            prepare(plan, "cpu")
    finally:
        subprocess.run(["umount", "-l", str(d)])


def test_a_portable_target_and_an_object_built_ahead_of_time(tmp_path, monkeypatch, zoo):
    """As the image does: built for a named target into a directory that is then read-only, and
    used from there on another start without compiling anything."""
    import subprocess
    import sys
    from nnos.backends.cpu.toolchain import TARGETS, cpu_features
    name = next((n for n, (machine, _, needs, _) in TARGETS.items()
                 if machine == os.uname().machine and needs <= cpu_features()), None)
    if name is None:
        pytest.skip("no named target fits this CPU")
    plan = nnos.compile(zoo["cnn_s"])
    plan.save(str(tmp_path / "p.nnos"))
    pre = tmp_path / "prebuilt"
    env = dict(os.environ, NNOS_CPU_TARGET=name, NNOS_CPU_CACHE=str(pre))
    r = subprocess.run([sys.executable, "-m", "nnos.backends.cpu", "build", str(tmp_path / "p.nnos")],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    os.chmod(pre, 0o555)
    monkeypatch.setenv("NNOS_CPU_TARGET", name)
    monkeypatch.setenv("NNOS_CPU_PREBUILT", str(pre))
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path / "cache"))
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu", exe.choice
    assert exe.facts["prebuilt"], exe.facts
    assert exe.facts["target"] == name, exe.facts
    assert exe.facts["vector_floats"] == TARGETS[name][3]
    # nothing compiled; verified against numpy once, and that remembered in the writable cache
    key = exe.facts["key"]
    marks = os.listdir(tmp_path / "cache")
    assert len(marks) == 1 and marks[0].startswith(f"verified-{key[:32]}-") and marks[0].endswith("-host"), marks
    assert "verified" not in exe.facts
    agree(plan)
    # the next start loads it without verifying it again (a boot's first tick does not wait for numpy)
    import nnos.backends as backends

    def refused(*a, **k):
        raise AssertionError("verified again")
    monkeypatch.setattr(backends, "against_reference", refused)
    again = prepare(plan, "cpu")
    assert again.backend == "cpu" and again.facts["verified"] == "once on host (remembered)", again.facts
    from nnos.backends.report import one_line
    assert "object built with the image, verified against numpy once on host (remembered)" in one_line(again)
    # the same object with other weights (another model of the same network) is verified once too
    other = nnos.compile(zoo["cnn_s"])
    for name, c in list(other.graph.consts.items()):
        if c.dtype.kind == "f":
            other.graph.consts[name] = c * np.asarray(1.01, c.dtype)
    with pytest.raises(AssertionError, match="verified again"):
        prepare(other, "auto")
    # another root slot (an update) verifies it for itself; an object compiled here always is
    monkeypatch.setenv("NNOS_ROOT", "root-b")
    with pytest.raises(AssertionError, match="verified again"):
        prepare(plan, "cpu")
    monkeypatch.setenv("NNOS_CPU_PREBUILT", "")
    with pytest.raises(AssertionError, match="verified again"):
        prepare(plan, "cpu")


def test_a_target_this_cpu_lacks_falls_back_with_the_reason(monkeypatch, zoo):
    from nnos.backends.cpu import toolchain as compiler
    plan = nnos.compile(zoo["mlp_s"])
    monkeypatch.setenv("NNOS_CPU_TARGET", "armv8-a" if os.uname().machine == "x86_64" else "x86-64-v2")
    exe = prepare(plan, "auto")
    assert exe.backend == "numpy", exe.choice
    assert "is for" in exe.choice["passed_over"]["cpu"], exe.choice
    if os.uname().machine == "x86_64":
        monkeypatch.setenv("NNOS_CPU_TARGET", "x86-64-v3")
        monkeypatch.setattr(compiler, "cpu_features", lambda: frozenset({"sse2", "ssse3"}))
        exe = prepare(plan, "auto")
        assert exe.backend == "numpy"
        assert "lacks what target x86-64-v3 needs" in exe.choice["passed_over"]["cpu"]
    monkeypatch.setenv("NNOS_CPU_TARGET", "pentium-pro")
    assert "expected native or one of" in prepare(plan, "auto").choice["passed_over"]["cpu"]


def test_cli_reports_the_backend(tmp_path, zoo):
    import subprocess
    import sys
    out = tmp_path / "p.nnos"
    r = subprocess.run([sys.executable, "-m", "nnos.cli", "compile", zoo["gru_s"], "-o", str(out),
                        "--backend", "cpu"], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, NNOS_CPU_CACHE=str(tmp_path / "c")))
    assert r.returncode == 0, r.stderr
    assert "backend cpu: compiled in" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "nnos.cli", "inspect", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert "backends   auto measures cpu, numpy when the plan is bound" in r.stdout, r.stdout
    r = subprocess.run([sys.executable, "-m", "nnos.cli", "bench", str(out), "--backend", "cpu", "--iters", "200"],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, NNOS_CPU_CACHE=str(tmp_path / "c")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "calls, cpu)" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("pad2,stride2,tail", [(1, 2, "flatten-gemm"), (0, 1, "flatten-gemm"), (1, 1, "add"),
                                               (2, 2, "output")])
def test_channel_blocked_chains(tmp_path, pad2, stride2, tail):
    """Convolutions whose outputs stay channel-blocked between them (and a Gemm whose weight rows
    follow that order), next to the cases that must stay NCHW: a graph output, an Add."""
    from nnos.backends.cpu.codegen import generate
    c1, c2 = 32, 32
    nodes = [helper.make_node("Conv", ["X", "W1", "B1"], ["C1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["C1"], ["R1"]),
             helper.make_node("Conv", ["R1", "W2", "B2"], ["C2"], kernel_shape=[3, 3], pads=[pad2] * 4,
                              strides=[stride2, stride2]),
             helper.make_node("Relu", ["C2"], ["R2"])]
    hw2 = (12 + 2 * pad2 - 3) // stride2 + 1
    inits = [("W1", rand(c1, 3, 3, 3, seed=1) * 0.3), ("B1", rand(c1, seed=2)),
             ("W2", rand(c2, c1, 3, 3, seed=3) * 0.1), ("B2", rand(c2, seed=4))]
    if tail == "flatten-gemm":
        nodes += [helper.make_node("Flatten", ["R2"], ["F"]), helper.make_node("Gemm", ["F", "WF", "BF"], ["Y"])]
        inits += [("WF", rand(c2 * hw2 * hw2, 10, seed=5) * 0.05), ("BF", rand(10, seed=6))]
        out = vi("Y", [1, 10])
    elif tail == "add":
        nodes += [helper.make_node("Add", ["R2", "R2"], ["Y"])]
        out = vi("Y", [1, c2, hw2, hw2])
    else:
        nodes[-1] = helper.make_node("Relu", ["C2"], ["Y"])
        out = vi("Y", [1, c2, hw2, hw2])
    plan = nnos.compile(save(model(nodes, [vi("X", [1, 3, 12, 12])], [out], inits), tmp_path / "chain.onnx"))
    for vw in (4, 8, 16):
        _, prog = generate(plan, vw)
        assert len(prog.blocked) == (1 if tail in ("add", "output") else 2), (vw, prog.blocked)
    agree(plan)


@pytest.mark.parametrize("vw", ["4", "8"])
def test_narrower_vectors_run_here_too(monkeypatch, vw, zoo):
    """The SSE/NEON (4) and AVX2 (8) forms of the same kernels, run on this machine."""
    monkeypatch.setenv("NNOS_CPU_VECTOR", vw)
    for name in ("mlp_s", "cnn_s", "gru_s"):
        plan = nnos.compile(zoo[name])
        got = agree(plan)
        assert got
        assert prepare(plan, "cpu").facts["vector_floats"] == int(vw)


@pytest.mark.parametrize("c,oc,group,stride,pad", [(4, 8, 2, 1, 1), (16, 16, 16, 1, 1), (8, 16, 8, 2, 0),
                                                    (6, 9, 3, 2, 2)])
def test_grouped_and_depthwise_conv(tmp_path, c, oc, group, stride, pad):
    hw = 10
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["C"], kernel_shape=[3, 3], strides=[stride, stride],
                              pads=[pad] * 4, group=group),
             helper.make_node("Sigmoid", ["C"], ["Y"])]
    out = (hw + 2 * pad - 3) // stride + 1
    inits = [("W", rand(oc, c // group, 3, 3, seed=9) * 0.4), ("B", rand(oc, seed=10))]
    m = model(nodes, [vi("X", [1, c, hw, hw])], [vi("Y", [1, oc, out, out])], inits)
    agree(nnos.compile(save(m, tmp_path / "gc.onnx")))


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 3], strides=[2, 1], ceil_mode=1)),
])
def test_pooling(tmp_path, op, attrs):
    x = vi("X", [2, 3, 11, 11])
    m = model([helper.make_node(op, ["X"], ["Y"], **attrs)], [x],
              [helper.make_tensor_value_info("Y", 1, ["n", "c", "h", "w"])])
    agree(nnos.compile(save(m, tmp_path / "pool.onnx")))


def test_a_small_mobile_net(tmp_path):
    """conv → depthwise → pointwise → max pool → global average → Gemm, with ReLU6-free ReLUs."""
    nodes = [helper.make_node("Conv", ["X", "W1"], ["A"], kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["A"], ["A1"]),
             helper.make_node("Conv", ["A1", "W2"], ["B"], kernel_shape=[3, 3], pads=[1] * 4, group=16),
             helper.make_node("Relu", ["B"], ["B1"]),
             helper.make_node("Conv", ["B1", "W3", "b3"], ["C"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["C"], ["C1"]),
             helper.make_node("MaxPool", ["C1"], ["D"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["D"], ["E"]),
             helper.make_node("Flatten", ["E"], ["F"]),
             helper.make_node("Gemm", ["F", "W4", "b4"], ["Y"])]
    inits = [("W1", rand(16, 3, 3, 3, seed=1) * 0.3), ("W2", rand(16, 1, 3, 3, seed=2) * 0.3),
             ("W3", rand(32, 16, 1, 1, seed=3) * 0.3), ("b3", rand(32, seed=4)),
             ("W4", rand(32, 5, seed=5) * 0.3), ("b4", rand(5, seed=6))]
    m = model(nodes, [vi("X", [1, 3, 32, 32])], [vi("Y", [1, 5])], inits)
    plan = nnos.compile(save(m, tmp_path / "mobile.onnx"))
    assert prepare(plan, "auto").backend == "cpu"
    agree(plan)


def test_policy_heads_softmax_clip_leaky_relu(tmp_path):
    """What policies end with: LeakyRelu hidden layers, a clipped continuous head, a softmax head."""
    nodes = [helper.make_node("Gemm", ["X", "W1", "b1"], ["H"]), helper.make_node("LeakyRelu", ["H"], ["H1"], alpha=0.2),
             helper.make_node("Gemm", ["H1", "W2", "b2"], ["A"]), helper.make_node("Clip", ["A", "lo", "hi"], ["ACT"]),
             helper.make_node("Gemm", ["H1", "W3", "b3"], ["L"]), helper.make_node("Softmax", ["L"], ["P"], axis=-1),
             helper.make_node("LeakyRelu", ["X"], ["XL"], alpha=0.05), helper.make_node("Clip", ["XL", "", "hi"], ["XC"])]
    inits = [("W1", rand(6, 40, seed=1)), ("b1", rand(40, seed=2)), ("W2", rand(40, 3, seed=3)), ("b2", rand(3, seed=4)),
             ("W3", rand(40, 7, seed=5)), ("b3", rand(7, seed=6)), ("lo", np.array(-0.5, np.float32)),
             ("hi", np.array(0.5, np.float32))]
    m = model(nodes, [vi("X", [2, 6])], [vi("ACT", [2, 3]), vi("P", [2, 7]), vi("XC", [2, 6])], inits)
    plan = nnos.compile(save(m, tmp_path / "heads.onnx"))
    assert prepare(plan, "auto").backend == "cpu"
    got = agree(plan)
    np.testing.assert_allclose(got["P"].sum(axis=-1), 1.0, rtol=1e-5)
    feeds = feeds_for(plan)
    feeds["X"][0, 0] = np.nan
    out = run_cpu_in_child(plan, feeds)
    assert np.isnan(out["XC"][0, 0])
    assert np.isnan(out["P"][0]).all()           # NaN passes Clip and Softmax


@pytest.mark.parametrize("shape", [(3, 5, 37), (2, 4, 65, 65), (1, 3, 5)])
def test_softmax_rows_in_groups(tmp_path, shape):
    """Attention's softmax over contiguous rows, four rows interleaved at a time and the rest
    one by one (15 rows: three groups and three alone; 520 rows of 65: vectors and a tail, on a
    team when the host has one; 3 rows: no group); a NaN makes its own row NaN, none other."""
    m = model([helper.make_node("Softmax", ["X"], ["Y"], axis=-1)], [vi("X", list(shape))], [vi("Y", list(shape))])
    plan = nnos.compile(save(m, tmp_path / "softmax.onnx"))
    got = agree(plan, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["Y"].sum(axis=-1), 1.0, rtol=1e-5)
    feeds = feeds_for(plan)
    rows = feeds["X"].reshape(-1, shape[-1])
    nan_rows = sorted({1, len(rows) - 1})                    # one inside a group, the last alone
    for r in nan_rows:
        rows[r, shape[-1] // 2] = np.nan
    out = run_cpu_in_child(plan, feeds)["Y"].reshape(len(rows), -1)
    assert [r for r in range(len(rows)) if np.isnan(out[r]).all()] == nan_rows
    assert not np.isnan(np.delete(out, nan_rows, axis=0)).any()


@pytest.mark.parametrize("n", [37, 65, 3])
def test_softmax_rows_with_infinities_and_underflow(tmp_path, n):
    """The max pass does not look for NaN, nor exp for ∞: a row with +∞ (∞ − ∞ in it), a row
    all −∞ and a NaN in a tail are NaN rows, as the reference's; −∞ elsewhere is 0, and values
    more than 87 below the max (exp's denormals) 0 or as small — in groups, alone and in tails."""
    shape = (9, n)
    m = model([helper.make_node("Softmax", ["X"], ["Y"], axis=-1)], [vi("X", list(shape))], [vi("Y", list(shape))])
    plan = nnos.compile(save(m, tmp_path / "softmax.onnx"))
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    x[0, 1], x[1, -1] = np.inf, np.inf                        # in a group's row and at a tail
    x[2, :] = -np.inf
    x[3, ::2] = -np.inf
    x[4, 1::2] -= 200.0                                        # exp(x − max) below float32's normals
    x[5, -1] = np.nan
    x[8, 0] = np.inf                                           # the row alone, after the groups
    out = run_cpu_in_child(plan, {"X": x})["Y"]
    want = plan({"X": x})["Y"]
    assert [r for r in range(9) if np.isnan(want[r]).all()] == [0, 1, 2, 5, 8]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-37)
    assert (out[3, ::2] == 0).all() and (out[4, 1::2] < 1e-37).all()


def test_auto_remembers_its_choice_for_the_images_object_once_verified(tmp_path, monkeypatch, zoo):
    """The image's own object, verified once on this slot: auto measures once and remembers its
    choice beside that mark; the next start takes it without probing or measuring the others
    (a boot's first tick waits for neither); other hardware (a GPU's device node) or another slot
    measures again."""
    import subprocess
    import sys
    import nnos.backends as backends
    from nnos.backends import ops_cpu
    plan = nnos.compile(zoo["mlp_s"])
    plan.save(str(tmp_path / "p.nnos"))
    pre = tmp_path / "prebuilt"
    r = subprocess.run([sys.executable, "-m", "nnos.backends.cpu", "build", str(tmp_path / "p.nnos")],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, NNOS_CPU_CACHE=str(pre)))
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("NNOS_CPU_PREBUILT", str(pre))
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path / "cache"))
    first = prepare(plan, "auto")
    assert first.choice["measured"] and "remembered" not in first.choice["why"], first.choice
    assert [n for n in os.listdir(tmp_path / "cache") if n.endswith(".auto.json")], os.listdir(tmp_path / "cache")

    def measured(*a, **k):
        raise AssertionError("measured again")
    monkeypatch.setattr(backends, "fastest", measured)
    monkeypatch.setattr(backends, "against_reference", measured)
    again = prepare(plan, "auto")
    assert again.backend == first.backend and again.choice["measured"] == first.choice["measured"]
    assert again.choice["why"].endswith("; measured once on this slot, remembered"), again.choice
    again.run()
    ref = prepare(plan, "numpy")
    ref.run()
    for k in ref.outputs:
        np.testing.assert_allclose(again.outputs[k], ref.outputs[k], rtol=1e-4, atol=1e-5)
    # a GPU that was not there, or another root slot: measured again
    monkeypatch.setattr(ops_cpu, "hardware", lambda: {"dri": ["renderD128"], "nvidia": [], "vulkan_cpu": False})
    with pytest.raises(AssertionError, match="measured again"):
        prepare(plan, "auto")
    monkeypatch.undo()
    monkeypatch.setenv("NNOS_CPU_PREBUILT", str(pre))
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NNOS_ROOT", "root-b")
    monkeypatch.setattr(backends, "fastest", measured)
    with pytest.raises(AssertionError, match="measured again"):
        prepare(plan, "auto")
    # a damaged record, or one naming a backend auto never chooses, is no choice: measured again
    monkeypatch.delenv("NNOS_ROOT")
    records = [tmp_path / "cache" / n for n in os.listdir(tmp_path / "cache") if n.endswith(".auto.json")]
    for text in ("{not json", json.dumps({"hardware": ops_cpu.hardware(), "choice": {"backend": "null", "why": "x"}})):
        for path in records:
            path.write_text(text)
        with pytest.raises(AssertionError, match="measured again"):
            prepare(plan, "auto")


@pytest.mark.parametrize("variant", ["qdq_u8", "dynamic"])
def test_the_image_target_s_source_needs_no_intrinsics_headers(tmp_path, monkeypatch, variant):
    """The image's compiler keeps gcc's freestanding headers, not the ISA intrinsics ones
    (image/steps/48-cpu-backend.sh), and builds its own target's object (x86-64-v2 on amd64):
    that source must compile without them. A QDQ transformer and a dynamically quantized one
    reach every helper (regression: a scalar rounding once included xmmintrin.h, and the
    image's build failed in its cpu-backend step)."""
    import platform
    import subprocess
    from nnos.backends.cpu import source
    from tests.support.quantized import quantized
    if platform.machine() != "x86_64" or shutil.which("gcc") is None:
        pytest.skip("the amd64 image's target, with this machine's gcc")
    monkeypatch.setenv("NNOS_CPU_TARGET", "x86-64-v2")
    path = quantized(os.path.join(ROOT, "models", "zoo", "act_s.onnx"), str(tmp_path / "q.onnx"), variant)
    (tmp_path / "plan.c").write_text(source(nnos.compile(path)))
    own = [subprocess.run(["gcc", f"-print-file-name={d}"], capture_output=True, text=True, check=True).stdout.strip()
           for d in ("include", "include-fixed")]
    trimmed = tmp_path / "include"
    shutil.copytree(own[0], trimmed, ignore=shutil.ignore_patterns("*intrin*.h", "mm3dnow.h", "mm_malloc.h", "cpuid.h"))
    assert not list(trimmed.glob("*intrin*.h")) and (trimmed / "stdint.h").exists()
    dirs = [str(trimmed), own[1], "/usr/include/x86_64-linux-gnu", "/usr/include"]
    r = subprocess.run(["gcc", "-fsyntax-only", "-std=gnu11", "-march=x86-64-v2", "-nostdinc",
                        *[a for d in dirs for a in ("-isystem", d)], str(tmp_path / "plan.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
