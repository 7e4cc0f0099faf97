"""Builds the arms' tracking policies: python -m nnos_models.arms.build [OUT_DIR].

Each is a tiny analytic network over the joint positions (radians):

    goal = x + clip(gain · (target − x), −step, step)

— a proportional move toward a target pose, never more than ``step`` radians a tick, so the
arm glides there and stays. It is what a first model on a new arm should be: its output is
easy to predict, so the trajectory can be checked (tests/system/test_arms.py does).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
# name: (joint names, target pose in rad, gain per tick, most radians per tick)
POLICIES = {
    "so101_track": (["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"],
                    [0.4, -0.5, 0.6, -0.3, 0.25, 0.2], 0.2, 0.012),
    "koch_track": (["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"],
                   [-0.35, 0.45, -0.5, 0.3, -0.2, 0.15], 0.2, 0.012),
}


def tracker(joints: list[str], target: list[float], gain: float, step: float) -> onnx.ModelProto:
    n = len(joints)
    consts = [numpy_helper.from_array(np.array([target], np.float32), "target"),
              numpy_helper.from_array(np.array(gain, np.float32), "gain"),
              numpy_helper.from_array(np.array(-step, np.float32), "lo"),
              numpy_helper.from_array(np.array(step, np.float32), "hi")]
    nodes = [helper.make_node("Sub", ["target", "joints"], ["error"]),
             helper.make_node("Mul", ["error", "gain"], ["move"]),
             helper.make_node("Clip", ["move", "lo", "hi"], ["bounded"]),
             helper.make_node("Add", ["joints", "bounded"], ["goal"])]
    graph = helper.make_graph(nodes, "track", [helper.make_tensor_value_info("joints", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("goal", TensorProto.FLOAT, [1, n])], consts)
    graph.doc_string = f"joints: {', '.join(joints)}; target {target} rad; gain {gain}; at most {step} rad a tick"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnos_models.arms")
    onnx.checker.check_model(model)
    return model


def main(argv=None) -> int:
    out = (argv or sys.argv[1:] or [HERE])[0]
    for name, args in POLICIES.items():
        path = os.path.join(out, f"{name}.onnx")
        onnx.save(tracker(*args), path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
