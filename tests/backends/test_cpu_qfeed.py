"""QuantizeLinears that store their bytes padded for their convolutions (backends/cpu/qfeed.py):
where only direct-form integer convolutions read a QuantizeLinear's output, or only 1 × 1 ones,
its step stores the words they read (VNNI: padded, or in groups of sixteen pixels) and they
copy nothing; every output exactly the reference's on each target, over runs whose scale and
zero point change; anything else quantizes as before."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu import source, width
from nnos.backends.cpu.toolchain import find_compiler
from tests.support.onnx_models import model, save, vi
from tests.support.quantized import I8, ints

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler"),
              pytest.mark.usefixtures("cpu_cache")]

# readers of the quantized tensor: (kernel, stride, pad); whether the QuantizeLinear stores what
# they read; the input's rows and columns
CASES = {
    "stride 2, a skip 1x1 beside": ([(3, 2, 1), (1, 2, 0)], True, 32),     # the 1×1 reads the 3×3's padding
    "stride 1": ([(3, 1, 1)], True, 32),
    "stride 2 to rows of 8": ([(3, 2, 1), (1, 2, 0)], True, 16),           # the kernel of two rows a vector
    "5x5 beside 3x3": ([(5, 1, 2), (3, 1, 1)], True, 32),                  # the 3×3 two rows and columns in
    "two pointwise 1x1": ([(1, 1, 0), (1, 1, 0)], True, 40),              # groups across rows; tiles of 64
    "stride 1 and a pointwise 1x1": ([(3, 1, 1), (1, 1, 0)], False, 32),   # two layouts
    "strides 1 and 2": ([(3, 1, 1), (3, 2, 1)], False, 32),
    "rows of 20": ([(3, 1, 1)], False, 20),                                # not whole groups of 16 a row
    "a 1x1 over 18 x 18": ([(1, 1, 0)], False, 18),                        # nor a last whole group
    "also an output": ([(3, 1, 1)], False, 32),
}


def _model(tmp_path, readers, q_dt: str, also_output: bool, hw: int = 32, c: int = 16):
    rng = np.random.default_rng(len(readers) + hw)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    inits, outs = [], []
    for k, (kernel, stride, pad) in enumerate(readers):
        nodes.append(helper.make_node("ConvInteger", ["q", f"w{k}", "z"], [f"y{k}"], kernel_shape=[kernel] * 2,
                                      strides=[stride] * 2, pads=[pad] * 4))
        inits.append((f"w{k}", ints(np.int8, (8, c, kernel, kernel), rng) // 2))
        out = (hw + 2 * pad - kernel) // stride + 1
        outs.append(vi(f"y{k}", [1, 8, out, out], TensorProto.INT32))
    if also_output:
        outs.append(vi("q", [1, c, hw, hw], I8[np.dtype(q_dt)]))
    ins = [vi("x", [1, c, hw, hw]), vi("s", []), vi("z", [], I8[np.dtype(q_dt)])]
    return nnos.compile(save(model(nodes, ins, outs, inits, opset=13), tmp_path / "feed.onnx"))


def _near_ties(s: np.float32) -> np.ndarray:
    """Values by the half-way points of scale ``s`` whose quotient rounds otherwise than their
    product by the reciprocal (a kernel that multiplied would differ there)."""
    k = np.arange(-127, 128).astype(np.float32)
    half = ((k + np.float32(0.5)) * s).astype(np.float32)
    near = np.concatenate([np.nextafter(half, np.float32(np.inf)), half, np.nextafter(half, np.float32(-np.inf))])
    ties = near[np.rint(near / s) != np.rint(near * (np.float32(1) / s))]
    assert ties.size > 0
    return ties


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("q_dt", ["uint8", "int8"])
def test_a_quantizelinear_stores_its_convolutions_padded_input(tmp_path, cpu_target, case, q_dt):
    readers, fed, hw = CASES[case]
    fed = fed and width() == 16                                          # VNNI's vectors (no regions elsewhere)
    plan = _model(tmp_path, readers, q_dt, case == "also an output", hw)
    src = source(plan)
    assert ("nnos_q16(x_" in src) == fed                               # the QuantizeLinear's words
    reading = src.count("const uint8_t *P = ((uint8_t *)(ws + ") + src.count("const uint8_t *const CA = ((uint8_t *)(ws + ")
    assert reading == (len(readers) if fed else 0)                      # a convolution reading them
    if fed and case.startswith("stride 2"):           # rows hw + 1, words (hw + 2) / 2 a row: a parity plane and a row in
        assert src.count(f" + {(hw + 2) * (hw + 2) // 2 * 4}; int32_t *Y = ") == 1
    if fed and case.startswith("5x5"):                                  # hp 36, wq 36: a row and a column
        assert src.count(f" + {(36 + 1) * 4}; int32_t *Y = ") == 1
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    rng = np.random.default_rng(7)
    zeros = {"uint8": (128, 3, 250), "int8": (-3, 100, -120)}[q_dt]
    for run, (scale, zero) in enumerate(zip((0.05, 0.013, 0.4), zeros)):   # a new zero point each run: the border
        x = (rng.standard_normal((1, 16, hw, hw)) * (3 + run)).astype(np.float32)
        x[0, 0, 0, :4] = [np.nan, 1e6, -1e6, 0.5 * scale]                 # NaN, saturation, a tie
        ties = _near_ties(np.float32(scale))
        x[0, 1:5].reshape(-1)[:ties.size] = ties
        feeds = {"x": x, "s": np.array(scale, np.float32), "z": np.array(zero, q_dt)}
        for k, v in feeds.items():
            np.copyto(exe.inputs[k], v)
        exe.run()
        for k, v in plan(feeds).items():
            np.testing.assert_array_equal(exe.outputs[k], v, err_msg=f"{k}, run {run}")
    exe.close()
