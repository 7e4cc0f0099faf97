"""The numpy-only training script reproduces a policy that balances (it checks 100 starts
itself before exporting) and exports an ONNX model nnos compiles."""
from __future__ import annotations

import subprocess
import sys
import numpy as np
import pytest

import nnos
from tests.support.paths import ROOT
from tests.support.timing import scaled


@pytest.mark.slow
def test_training_script_exports_a_working_policy(tmp_path):
    out = tmp_path / "cartpole.onnx"
    # no timed assertion: the deadline scales with this machine's speed and load (a loaded run
    # timed out at a fixed 300 s)
    r = subprocess.run([sys.executable, "-m", "nnos_models.cartpole.train", "--out", str(out), "--seed", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=scaled(300))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "100/100" in r.stdout or "99/100" in r.stdout
    plan = nnos.compile(str(out))
    assert plan.inputs[0].shape == (1, 4)
    assert plan.outputs[0].shape == (1, 1)
    a = plan({"obs": np.float32([[0, 0, 0.1, 0]])})["action"][0, 0]
    assert a > 0.1        # pole leaning right (θ > 0): push the cart right
