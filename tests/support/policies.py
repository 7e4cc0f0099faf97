"""Boards and policies for tests: the cart-pole board at another rate or failsafe rule, and
variants of the cart-pole policy (scaled, NaN-producing, slowed) that a test uploads,
activates or stores."""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

import nnos
from nnos_hardware.board import load_board
from tests.support.paths import BOARDS, ROOT

BOARD = os.path.join(BOARDS, "cartpole-sim.toml")


def board_at(tmp_path, rate_hz=50, failsafe="", model_cpus=1):
    text = open(BOARD).read().replace("rate_hz = 50", f"rate_hz = {rate_hz}\nmodel_cpus = {model_cpus}")
    text = text.replace('model = "models/cartpole/cartpole.onnx"', f'model = "{ROOT}/models/cartpole/cartpole.onnx"')
    if failsafe:
        text += "\n[failsafe]\n" + failsafe + "\n"
    p = tmp_path / "board.toml"
    p.write_text(text)
    return load_board(str(p))


def policy_variant(tmp_path, name, scale=1.0, nan=False, slow=0, nan_below=0.0, width=256):
    """The cart-pole policy with its last layer scaled (another model), made to output NaN,
    or made slow (``slow`` extra ``width``×``width`` matmuls per call). ``nan_below``: NaN while any
    observation's magnitude is under it — finite on the standard-normal sample inputs an upload
    is checked on (their smallest is 0.19), NaN on a balanced cart-pole's small observations: a
    model that passes intake and trips its probation in the loop."""
    m = onnx.load(os.path.join(ROOT, "models", "cartpole", "cartpole.onnx"))
    for init in m.graph.initializer:
        if init.name == "W2":
            w = numpy_helper.to_array(init) * scale
            if nan:
                w = w * np.float32("nan")
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), "W2"))
    for i in range(slow):
        big = numpy_helper.from_array(np.full((width, width), 1e-3, np.float32), f"big{i}")
        m.graph.initializer.append(big)
        src = "obs" if i == 0 else f"s{i - 1}"
        if i == 0:
            m.graph.initializer.append(numpy_helper.from_array(np.zeros((4, width), np.float32), "pad"))
            m.graph.node.append(helper.make_node("MatMul", ["obs", "pad"], ["p0"]))
            src = "p0"
        m.graph.node.append(helper.make_node("MatMul", [src, f"big{i}"], [f"s{i}"]))
    if slow:
        m.graph.initializer.append(numpy_helper.from_array(np.zeros((width, 1), np.float32), "sink"))
        m.graph.node.append(helper.make_node("MatMul", [f"s{slow - 1}", "sink"], ["z"]))
        m.graph.node[-1].output[0] = "z"
        out = next(n for n in m.graph.node if "action" in n.output)
        out.output[0] = "action_pre"
        m.graph.node.append(helper.make_node("Add", ["action_pre", "z"], ["action"]))
    if nan_below:
        out = next(n for n in m.graph.node if "action" in n.output)
        out.output[0] = "action_ok"
        m.graph.initializer.extend([numpy_helper.from_array(np.float32(nan_below), "nan_below"),
                                    numpy_helper.from_array(np.float32(0), "zero")])
        m.graph.node.extend([helper.make_node("Abs", ["obs"], ["obs_abs"]),
                             helper.make_node("Sub", ["obs_abs", "nan_below"], ["margin"]),
                             helper.make_node("Sqrt", ["margin"], ["root"]),       # NaN under the bound
                             helper.make_node("ReduceSum", ["root"], ["root_sum"], keepdims=1),
                             helper.make_node("Mul", ["root_sum", "zero"], ["nan_or_zero"]),
                             helper.make_node("Add", ["action_ok", "nan_or_zero"], ["action"])])
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(m, path)
    return path


def store_model(store, path) -> str:
    plan = nnos.compile(path, check=False)
    return store.put(plan.to_bytes())
