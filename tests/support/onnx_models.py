"""Small ONNX graphs built in tests (no model hub: every model is generated)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nnos_models.zoo.precision import to_float16  # noqa: F401 - the tests' float16 models


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "t", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def save(m, path):
    onnx.save(m, str(path))
    return str(path)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_close(got, ref, rtol=1e-5):
    """Relative tolerance against the reference, with an absolute floor scaled to the output."""
    ref = np.asarray(ref)
    atol = rtol * max(1.0, float(np.max(np.abs(ref)))) if ref.size else 0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
