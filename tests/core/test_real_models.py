"""Real-model cases shipped inside the onnx package: `pytorch-converted` (torch modules with
recorded inputs and outputs) and `light` (ImageNet architectures with generated weights,
checked against onnxruntime on random inputs). Every case whose ops nnos claims must pass;
these models use opsets 6-12, so this also exercises the upgrade to opset 13 at import."""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import nnos
from nnos.compiler import sample_inputs
from tests.support.onnx_cases import CONVERTED, LIGHT

def test_cases_found():
    assert len(CONVERTED) >= 60, (len(CONVERTED), len(LIGHT))
    assert len(LIGHT) >= 2, (len(CONVERTED), len(LIGHT))


@pytest.mark.parametrize("path", CONVERTED, ids=[p.split(os.sep)[-2] for p in CONVERTED])
def test_pytorch_converted(path):
    plan = nnos.compile(path)
    d = os.path.join(os.path.dirname(path), "test_data_set_0")
    ins = [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(os.path.join(d, "input_*.pb")))]
    outs = [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(os.path.join(d, "output_*.pb")))]
    got = plan({s.name: v for s, v in zip(plan.inputs, ins)})
    for spec, ref in zip(plan.outputs, outs):
        np.testing.assert_allclose(got[spec.name], ref, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("path", LIGHT, ids=[os.path.basename(p) for p in LIGHT])
def test_light_model_against_onnxruntime(path, ort_session):
    plan = nnos.compile(path)
    feeds = sample_inputs(plan)
    ref = ort_session(path).run(None, feeds)
    got = plan(feeds)
    for spec, r in zip(plan.outputs, ref):
        np.testing.assert_allclose(got[spec.name], r, rtol=1e-3, atol=1e-5)
