"""Shared fixtures. Tests are grouped by what they need: tests/core (no hardware, pure Python
+ onnx/onnxruntime), tests/backends (one directory per backend)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from nnos import flags

pytest_plugins = ["tests.support.fixtures"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = flags.QUICK.get()


def pytest_collection_modifyitems(config, items):
    if not QUICK:
        return
    skip = pytest.mark.skip(reason="NNOS_QUICK=1 skips slow cases")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The benchmark/demo models, built fresh from models/zoo/build.py."""
    from nnos_models.zoo.build import build
    return build(str(tmp_path_factory.mktemp("zoo")))


@pytest.fixture(scope="session")
def ort_session():
    import onnxruntime as ort

    def make(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return make


def assert_close(got, ref, rtol=1e-5):
    """Relative tolerance against the reference, with an absolute floor scaled to the output."""
    ref = np.asarray(ref)
    atol = rtol * max(1.0, float(np.max(np.abs(ref)))) if ref.size else 0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
