"""Image pre-processing compiled into the plan (in_plan = true): the plan takes the camera's
uint8 frame and computes what the binding's numpy pre-processing computes, on the reference
and on the cpu backend; the binding hands it each frame once; what cannot be an average pool
is refused with the way out."""
from __future__ import annotations

import numpy as np
import pytest

from nnos.compiler import compile
from nnos.errors import CompileError
from nnos_hardware.board import load_board
from nnos_hardware.errors import ConfigError
from nnos_hardware.preprocess import Preprocess
from nnos_hardware.sim.camera import Scene, target
from tests.support.paths import BOARDS, ROOT

MODEL = f"{ROOT}/models/vision/follow.onnx"


def _board(tmp_path, extra: str = ", in_plan = true", crop='"center"'):
    text = open(f"{BOARDS}/vision_so101.toml").read().replace('model = "models/', f'model = "{ROOT}/models/')
    text = text.replace('mean = [1.0, 1.0, 1.0] }', f'mean = [1.0, 1.0, 1.0]{extra} }}')
    text = text.replace('crop = "center"', f"crop = {crop}")
    p = tmp_path / "b.toml"
    p.write_text(text)
    return load_board(str(p))


def _frames(n=3):
    scene = Scene(480, 640)
    out = []
    for t in np.linspace(0, 7, n):
        f = scene.render(*target(t))
        f += np.random.default_rng(int(t * 10)).integers(0, 20, f.shape, dtype=np.uint8)   # not flat colour
        out.append(f)
    return out


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_the_plan_preprocesses_as_the_binding_does(tmp_path, backend):
    board = _board(tmp_path)
    images = board.plan_images()
    assert list(images) == ["image"] and images["image"][0] == (480, 640)
    inplan = compile(MODEL, images=images).bind(backend)
    plain = compile(MODEL).bind("numpy")
    assert inplan.inputs["image"].dtype == np.uint8 and inplan.inputs["image"].shape == (1, 480, 640, 3)
    im = board.inputs[0].image
    for f in _frames():
        x = np.zeros((1, 3, 96, 96), np.float32)
        Preprocess(f, x, im["size"], im["resize"], im["crop"], im["layout"], im["scale"], im.get("mean", (0, 0, 0)),
                   im.get("std", (1, 1, 1))).run()
        plain.inputs["image"][...] = x
        plain.run()
        inplan.inputs["image"][...] = f[None]
        inplan.run()
        np.testing.assert_allclose(inplan.outputs["actions"], plain.outputs["actions"], rtol=1e-4, atol=1e-5)


def test_an_hwc_network_and_an_roi_crop(tmp_path):
    """The prepended ops alone (an identity network): HWC layout, an ROI crop, a 2×4 average."""
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 30, 20, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 30, 20, 3])])
    path = str(tmp_path / "id.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    spec = {"size": (30, 20), "crop": [10, 4, 60, 80], "resize": "area", "layout": "hwc", "scale": 0.5,
            "mean": (1.0, 2.0, 3.0), "std": (2.0, 4.0, 8.0)}
    exe = compile(path, images={"x": ((90, 100), spec)}).bind("cpu")
    f = np.random.default_rng(3).integers(0, 256, (90, 100, 3), dtype=np.uint8)
    exe.inputs["x"][...] = f[None]
    exe.run()
    crop = f[10:70, 4:84].astype(np.float64).reshape(30, 2, 20, 4, 3).mean(axis=(1, 3))
    want = (crop * 0.5 - np.array([1.0, 2.0, 3.0])) / np.array([2.0, 4.0, 8.0])
    np.testing.assert_allclose(exe.outputs["y"][0], want, rtol=1e-5, atol=1e-5)


def test_the_binding_gives_the_plan_each_frame_once(tmp_path):
    from nnos_hardware.binding import Binder
    from nnos_hardware.devices import SimulatedDevice
    board = _board(tmp_path)
    devs = {d.name: SimulatedDevice(d.name, d.channels) for d in board.devices}
    exe = compile(MODEL, images=board.plan_images()).bind("numpy")
    binder = Binder(board, devs, exe.inputs, exe.outputs)
    f = _frames(1)[0]
    devs["cam"].feed("frame", f)
    binder.read_inputs()
    assert np.array_equal(exe.inputs["image"][0], f)
    exe.inputs["image"][...] = 0                 # not copied again until the camera has a new frame
    binder.read_inputs()
    assert not exe.inputs["image"].any()
    devs["cam"].feed("frame", f)
    binder.read_inputs()
    assert np.array_equal(exe.inputs["image"][0], f)


def test_what_cannot_be_in_the_plan_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"in_plan = true resizes by whole factors .* the crop 470×470 → 96×96"):
        _board(tmp_path, crop="[0, 0, 470, 470]")
    with pytest.raises(ConfigError, match="with in_plan = true the plan takes the camera's frame, uint8 \\[1, 480, 640, 3\\]"):
        _board(tmp_path).check_plan(compile(MODEL))
    with pytest.raises(CompileError, match="the model's inputs are \\['image'\\]"):
        compile(MODEL, images={"img": ((480, 640), {"size": (96, 96)})})
    with pytest.raises(CompileError, match="the crop 480×640 → 96×96 with 'bilinear' is not"):
        compile(MODEL, images={"image": ((480, 640), {"size": (96, 96), "resize": "bilinear"})})
