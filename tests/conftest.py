"""Shared fixtures. Tests are grouped by what they need: tests/core (no hardware, pure Python
+ onnx/onnxruntime), tests/backends (one directory per backend)."""
from __future__ import annotations


import pytest

from nnos import flags

pytest_plugins = ["tests.support.fixtures"]

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
