"""The ONNX package's own test cases as nnos runs them: the node cases for every op nnos claims
(with the reasons a case cannot apply), the real models it ships, and onnxruntime as the oracle.
Shared by the numpy reference's conformance tests and the cpu backend's."""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
from onnx import numpy_helper

import nnos
from nnos.ops import OPS
from nnos.passes.quant import LOWERED

UNSUPPORTED_DTYPES = ("BFLOAT16", "BF16", "FLOAT8", "E4M3", "E5M2", "INT4", "UINT4", "FLOAT4", "INT2", "UINT2", "E8M0", "string")
EXCLUDED = {
    "test_batchnorm_example_training_mode": "training_mode=1: nnos compiles inference only",
    "test_batchnorm_epsilon_training_mode": "training_mode=1: nnos compiles inference only",
    "test_identity_sequence": "sequence-typed input: nnos plans hold tensors only",
    "test_identity_opt": "optional-typed input: nnos plans hold tensors only",
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool's Indices output is not supported",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool's Indices output is not supported",
}


def excluded_reason(case):
    if case.name in EXCLUDED:
        return EXCLUDED[case.name]
    if case.name.startswith("test_center_crop_pad_"):
        return "the crop size is a run-time input the pads are computed from: the output's shape would be dynamic"
    if case.name.startswith(("test_hannwindow", "test_hammingwindow", "test_blackmanwindow")):
        return "the window's size is a run-time input: the output's shape would be dynamic"
    if "_blocked" in case.name:
        return "blocked quantization (block_size > 0): nnos takes one scale per tensor or per axis"
    upper = case.name.upper()
    for d in UNSUPPORTED_DTYPES:
        if d.upper() in upper:
            return f"dtype {d} is not supported (nnos plans: float16/32/64, integers, bool)"
    return None


# ops nnos runs as the ONNX function onnx defines them by (frontend/functions.py), whose cases
# therefore count as claimed too
FUNCTIONS = {"Attention", "DynamicQuantizeLinear"}


# cases where onnxruntime (the second oracle) disagrees with the case's own recorded outputs,
# which nnos matches
ORACLE_DIFFERS = {
    f"test_attention_4d_with_past_and_present_qk_matmul_bias_{m}_mask_causal":
        "onnxruntime's qk_matmul_output leaves out the causal mask the ONNX reference applies"
    for m in ("3d", "4d")}


def _cases():
    from onnx.backend.test.loader import load_model_tests
    claimed = set(OPS) | {"Constant"} | FUNCTIONS | set(LOWERED)
    out = []
    for c in load_model_tests(kind="node"):
        ops = {n.op_type for n in c.model.graph.node}
        if ops <= claimed:
            out.append(c)
    return out


CASES = _cases()


def array_of(v):
    return numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)


def const_slots(case) -> set:
    """Inputs a node needs as compile-time constants (Reshape's shape, Slice's starts, ...)."""
    return {n.input[k] for n in case.model.graph.node if n.op_type in OPS
            for k in OPS[n.op_type].const_inputs if k < len(n.input)}


def rnn_weights(case) -> set:
    """W, R, B and the peepholes of a recurrent case's node."""
    node = case.model.graph.node[0]
    return {node.input[i] for i in (1, 2, 3, 4, 7) if i < len(node.input) and node.input[i]}


def case_runs(case, path, frozen: set):
    """Per data set: (plan with the ``frozen`` inputs as constants, the other inputs, every
    input by name, the recorded outputs)."""
    onnx.save(case.model, path)
    inits = {t.name for t in case.model.graph.initializer}
    names = [i.name for i in case.model.graph.input if i.name not in inits]
    for ins, outs in case.data_sets:
        every = {n: array_of(v) for n, v in zip(names, ins)}
        plan = nnos.compile(path, check=False, freeze={n: v for n, v in every.items() if n in frozen})
        yield plan, {n: v for n, v in every.items() if n not in frozen}, every, outs


def tolerances(case, ref) -> tuple[float, float]:
    """(rtol, atol) for an output: the case's own, or float16's stated tolerance (verify.TOLERANCE)
    for a float16 output — nnos computes a float16 model in float32 inside, the reference rounds
    after every op, so the two differ by a few float16 roundings."""
    from nnos.backends.verify import TOLERANCE
    if np.asarray(ref).dtype == np.float16:
        return max(case.rtol, TOLERANCE["float16"]), max(case.atol, TOLERANCE["float16"] / 10)
    return case.rtol, case.atol


def onnxruntime_session(path):
    """An onnxruntime session for the case, or None where onnxruntime itself cannot run it."""
    import onnxruntime as ort
    try:
        return ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception:
        return None


def run_oracle(session, feeds, case=None):
    if session is None or (case is not None and case.name in ORACLE_DIFFERS):
        return None
    try:
        return session.run(None, feeds)
    except Exception:      # e.g. "ReduceMax is not defined for empty set with bool type"
        return None


DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def _covered(path):
    m = onnx.load(path, load_external_data=False)
    return {n.op_type for n in m.graph.node} <= set(OPS) | {"Constant"}


CONVERTED = [p for p in sorted(glob.glob(os.path.join(DATA, "pytorch-converted", "*", "model.onnx"))) if _covered(p)]
LIGHT = [p for p in sorted(glob.glob(os.path.join(DATA, "light", "*.onnx"))) if _covered(p)]
