"""Action chunks for tests: ACT's temporal ensembling written as ACT's evaluation loop does it
(the reference the action queue is checked against), and a chunk-emitting policy."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def act_reference(chunks: dict[int, np.ndarray], ticks: int, k: int, n: int, m: float) -> np.ndarray:
    """ACT's temporal aggregation: all_time_actions[t_chunk, t:t+k] = chunk; at tick t the
    populated rows of column t, oldest first, weighted exp(-m·arange)."""
    table = np.full((ticks, ticks + k, n), np.nan)
    out = np.full((ticks, n), np.nan)
    for t in range(ticks):
        if t in chunks:
            table[t, t:t + len(chunks[t])] = chunks[t]
        col = table[:, t]
        have = col[~np.isnan(col).any(axis=1)]
        if len(have):
            w = np.exp(-m * np.arange(len(have)))
            out[t] = (have * (w / w.sum())[:, None]).sum(axis=0)
    return out


def chunk_policy(path: str, k: int, n_in: int = 4, seed: int = 0) -> str:
    """obs [1, n_in] → actions [1, k, 1]: a linear map (its weights small, its actions in range)."""
    w = np.random.default_rng(seed).normal(scale=0.05, size=(n_in, k)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["flat"]), helper.make_node("Reshape", ["flat", "shape"], ["actions"])],
        "chunk", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, k, 1])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([1, k, 1], np.int64), "shape")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def slow_chunk_policy(path: str, k: int, n_in: int = 4, size: int = 512, layers: int = 2, seed: int = 0) -> str:
    """obs [1, n_in] → actions [1, k, 1] through ``layers`` [size, size] @ [size, size] products
    that depend on the input (nothing folds away): milliseconds of work a call — a policy slower
    than one tick's budget."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(scale=0.01, size=(n_in, size)).astype(np.float32), "W0"),
             numpy_helper.from_array(rng.normal(scale=0.01, size=(size, size)).astype(np.float32), "C"),
             numpy_helper.from_array(rng.normal(scale=0.01, size=(size, k)).astype(np.float32), "Wout"),
             numpy_helper.from_array(np.array([1, k, 1], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["obs", "W0"], ["h0"]), helper.make_node("Add", ["h0", "C"], ["m0"])]
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.normal(scale=0.01, size=(size, size)).astype(np.float32), f"D{i}"))
        nodes.append(helper.make_node("MatMul", [f"m{i}", f"D{i}"], [f"m{i + 1}"]))
    nodes += [helper.make_node("ReduceMean", [f"m{layers}"], ["pooled"], axes=[0], keepdims=1),
              helper.make_node("MatMul", ["pooled", "Wout"], ["flat"]),
              helper.make_node("Reshape", ["flat", "shape"], ["actions"])]
    g = helper.make_graph(nodes, "slow_chunk", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, n_in])],
                          [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [1, k, 1])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def numpy_ms(path: str) -> float:
    """The least a call of the model at ``path`` takes on the numpy backend here (ms, best of 5):
    a busy host only adds to it."""
    import time

    import nnos
    exe = nnos.compile(path).bind("numpy")
    exe.run()
    took = []
    for _ in range(5):
        t0 = time.perf_counter()
        exe.run()
        took.append((time.perf_counter() - t0) * 1000)
    return min(took)


def slower_than(path: str, k: int, ms: float) -> str:
    """``slow_chunk_policy`` with as many layers as it takes to run longer than ``ms`` on this
    machine (numpy, measured): a fast host made the two-layer one quicker than a tick's budget."""
    import math

    layers = 2
    while True:
        slow_chunk_policy(path, k, layers=layers)
        took_ms = numpy_ms(path)
        if took_ms > ms or layers >= 64:
            return path
        layers = min(64, math.ceil(layers * 1.3 * ms / max(took_ms, 0.01)))
