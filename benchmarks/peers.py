"""The peers nnos's cpu backend is measured against, each a callable that runs one inference on
inputs bound once: onnxruntime (io-binding) and OpenVINO (CPU plugin, LATENCY hint, float32
inference precision — on CPUs with bf16 or fp16 arithmetic it would otherwise compute in those),
each with 1 thread and with its default threads (all cores).

OpenVINO is optional (``pip install -e .[bench]``; ``./build.sh bench`` installs it): without
it, its columns say so.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort


def onnxruntime_runner(path: str, feeds: dict, threads: int | None):
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    for k, v in feeds.items():
        binding.bind_cpu_input(k, v)
    for o in sess.get_outputs():
        binding.bind_output(o.name)
    return lambda: sess.run_with_iobinding(binding), lambda: sess.run(None, feeds)


def openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__


def openvino_runner(path: str, feeds: dict, threads: int | None):
    import openvino as ov
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(path, "CPU", config)
    req = compiled.create_infer_request()
    for k, v in feeds.items():
        req.set_tensor(k, ov.Tensor(np.ascontiguousarray(v), shared_memory=True))
    return req.infer


def runners(path: str, feeds: dict) -> dict:
    """{peer name: callable}: ort1 / ort (defaults) by io-binding, ort1_run (session.run, as the
    older figures were), ov1 / ov (defaults) when OpenVINO is installed."""
    out = {}
    out["ort1"], out["ort1_run"] = onnxruntime_runner(path, feeds, 1)
    out["ort"], _ = onnxruntime_runner(path, feeds, None)
    if openvino_version():
        out["ov1"] = openvino_runner(path, feeds, 1)
        out["ov"] = openvino_runner(path, feeds, None)
    return out
