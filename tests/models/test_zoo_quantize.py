"""models/zoo/quantize.py: onnxruntime's quantizer run on a private copy of the source, so that
runs on one source (pytest-xdist's workers) never delete each other's files."""
from __future__ import annotations

import os
import shutil

import onnx
import pytest

from tests.support.paths import ROOT
from tests.support.quantized import ops, quantized


@pytest.mark.parametrize("variant", ["qdq_u8", "dynamic"])
def test_quantizing_leaves_the_source_directory_alone(tmp_path, variant):
    """Regression (CI of 7dcb2c8): quantize_static wrote "<model>-inferred.onnx" beside the zoo's
    model and deleted it, so a second worker quantizing the same model lost its file
    (FileNotFoundError). Here a file of that name, another run's, must survive untouched."""
    source = tmp_path / "zoo"
    source.mkdir()
    src = source / "mlp_s.onnx"
    shutil.copy(os.path.join(ROOT, "models", "zoo", "mlp_s.onnx"), src)
    others = source / "mlp_s-inferred.onnx"
    others.write_bytes(b"another run's file")
    before = sorted(os.listdir(source))

    out = quantized(str(src), str(tmp_path / "q.onnx"), variant)

    assert sorted(os.listdir(source)) == before
    assert others.read_bytes() == b"another run's file"
    onnx.checker.check_model(out)
    assert ops(out) & {"QuantizeLinear", "DynamicQuantizeLinear"}
