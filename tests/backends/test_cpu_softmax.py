"""float32 Softmax rows on the cpu backend (cpu/softmax.py) whose scores arrive on the 8-bit
grid of one scale — a QDQ model's attention: exp(x − max) from two 16-entry tables in
registers (AVX-512, AVX2), vexp elsewhere; within float32's tolerance of the reference, the
rows' tails included, whatever the scale (exp's underflow at large ones). On every target the
machine can run."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import nnos
from nnos.backends import prepare
from nnos.backends.cpu import source, width
from nnos.backends.cpu.toolchain import find_compiler
from tests.support.onnx_models import model, save, vi

pytestmark = [pytest.mark.skipif(find_compiler() is None, reason="no C compiler here"),
              pytest.mark.usefixtures("cpu_cache")]


def _scores(rng, shape, scale, zp, lo, hi):
    """Values over the whole grid, and rows that reach both of its ends (differences of 255
    steps: the tables' last entries)."""
    x = (rng.standard_normal(shape) * 40 * scale + (float(zp) - (lo + hi) / 2) * -scale).astype(np.float32)
    x[..., 0, :2] = [1e9, -1e9]                 # rounded to the grid's bounds
    x[..., 1, -1] = 1e9                         # the far end in a row's scalar tail
    return x


@pytest.mark.parametrize("scale,zp", [(8 / 255, np.uint8(128)), (0.5, np.uint8(0)), (1e-3, np.int8(0)),
                                      (0.0371, np.int8(-20))])
def test_scores_on_a_grid_take_exp_from_tables(tmp_path, cpu_target, scale, zp):
    """QuantizeLinear → DequantizeLinear → Softmax over rows of 65 (four vectors of 16 or eight
    of 8, and a tail of one): the tables on AVX-512 and AVX2 code, the polynomial on the generic
    loops; the output within 3e-5 relative of the reference (the difference of two values on
    the grid, then one product of table entries). Where exp(−255·s) is a normal float32 the
    grid's top value stands for every row's max (no max pass): rows far below it included."""
    shape = [2, 4, 13, 65]
    s, z = np.array(scale, np.float32), np.array(zp)
    nodes = [helper.make_node("QuantizeLinear", ["a", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Softmax", ["d"], ["y"], axis=-1)]
    plan = nnos.compile(save(model(nodes, [vi("a", shape)], [vi("y", shape)], [("s", s), ("z", z)]),
                             tmp_path / "s.onnx"))
    tables = width() in (8, 16)
    assert ("vexp_grid(" in source(plan)) == tables
    assert ("vhmax(m0)" in source(plan)) == (not tables or 255 * scale > 80)     # the max pass
    info = np.iinfo(z.dtype)
    x = _scores(np.random.default_rng(7), shape, scale, int(zp), info.min, info.max)
    x[1, 2, 3] = (info.min - float(zp)) * scale * (1 + np.arange(65) % 3 * 1e-3)  # a row at the grid's bottom
    exe = prepare(plan, "cpu")
    assert exe.backend == "cpu"
    np.copyto(exe.inputs["a"], x)
    exe.run()
    got, want = exe.outputs["y"], plan({"a": x})["y"]
    np.testing.assert_allclose(got, want, rtol=3e-5, atol=1e-37)
    if scale * 255 > 104:                               # exp(−255·s) underflows, and so do the tables
        assert (want == 0).any() and (got == 0).any()
