"""A stock KServe v2 / Triton client, unchanged, against the control plane (regression from
the hardening issue: tritonclient sent no Content-Type and got 422, the binary extension was
missing, errors came back as {"detail"}, the repository index and model config were 404, a NaN
output was a 500)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnos
from tests.support.paths import POLICY

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def triton(api):
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{api.port}")
    headers = {"Authorization": f"Bearer {api.token}"}
    yield c, headers
    c.close()


def _upload(api, path):
    r = api.client.post("/v1/models", content=open(path, "rb").read())
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize("binary", [False, True])
def test_stock_tritonclient_reads_metadata_and_infers(api, triton, binary):
    c, h = triton
    mid = _upload(api, POLICY)
    assert c.is_server_live(headers=h)
    assert c.is_model_ready(mid, headers=h)
    meta = c.get_model_metadata(mid, headers=h)
    assert meta["inputs"][0]["name"] == "obs"
    assert meta["outputs"][0]["name"] == "action"
    cfg = c.get_model_config(mid, headers=h)
    assert cfg["input"][0] == {"name": "obs", "data_type": "TYPE_FP32", "dims": [1, 4]}
    assert any(m["name"] == mid for m in c.get_model_repository_index(headers=h))
    obs = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    inp = httpclient.InferInput("obs", [1, 4], "FP32")
    inp.set_data_from_numpy(obs, binary_data=binary)
    out = httpclient.InferRequestedOutput("action", binary_data=binary)
    res = c.infer(mid, [inp], outputs=[out], headers=h)
    ref = nnos.compile(POLICY)({"obs": obs})["action"]
    assert np.allclose(res.as_numpy("action"), ref, rtol=1e-6)


def test_errors_reach_the_client_in_the_protocols_shape(api, triton):
    c, h = triton
    mid = _upload(api, POLICY)
    inp = httpclient.InferInput("obs", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match=r"expected \[1, 4\]"):
        c.infer(mid, [inp], headers=h)
    with pytest.raises(InferenceServerException, match="unauthorized"):
        c.get_model_metadata(mid)


def test_nan_outputs_go_as_binary_or_a_clear_4xx(api, triton, tmp_path):
    c, h = triton
    # log|x| summed: finite on the upload's sample inputs, -inf where an input is 0
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Abs", ["obs"], ["a"]), helper.make_node("Log", ["a"], ["l"]),
         helper.make_node("ReduceSum", ["l", "axes"], ["action"], keepdims=1)], "g",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")]), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "inf.onnx"
    onnx.save(m, str(path))
    mid = _upload(api, str(path))
    inp = httpclient.InferInput("obs", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), np.float32))
    res = c.infer(mid, [inp], outputs=[httpclient.InferRequestedOutput("action", binary_data=True)], headers=h)
    assert np.isneginf(res.as_numpy("action")).all()
    with pytest.raises(InferenceServerException, match="NaN or infinite"):
        c.infer(mid, [inp], outputs=[httpclient.InferRequestedOutput("action", binary_data=False)], headers=h)
