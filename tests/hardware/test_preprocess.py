"""Image pre-processing in the binding against independent references: exact area averaging
(and PIL's BOX filter where the blocks are whole) for area resizing, a per-pixel transcription
of OpenCV's INTER_LINEAR for bilinear, numpy for the crop, layout and normalisation; no
allocation per frame; declared and checked in the board."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from nnos_hardware.board import load_board
from nnos_hardware.channels import SENSOR, Channel, Sample
from nnos_hardware.errors import ConfigError
from nnos_hardware.preprocess import Preprocess, crop_box

Image = pytest.importorskip("PIL.Image")


def frame(h=120, w=160, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pil_box(img: np.ndarray, size) -> np.ndarray:
    """[h, w, 3] float → [3, size] by PIL's BOX filter, one colour plane at a time."""
    return np.stack([np.asarray(Image.fromarray(img[:, :, c].astype(np.float32), mode="F").resize(size[::-1], Image.BOX))
                     for c in range(3)])


def exact_area(img: np.ndarray, size) -> np.ndarray:
    """Area averaging with fractional coverage (OpenCV's INTER_AREA when shrinking), exactly: each
    axis repeated out-size times so every output's source interval falls on whole samples."""
    x = img.astype(np.float64)
    for axis, n in ((0, size[0]), (1, size[1])):
        x = np.repeat(x, n, axis=axis)
        shape = list(x.shape)
        shape[axis:axis + 1] = [n, x.shape[axis] // n]
        x = x.reshape(shape).mean(axis=axis + 1)
    return x.transpose(2, 0, 1)


def cv_linear(img: np.ndarray, size) -> np.ndarray:
    """OpenCV's INTER_LINEAR, per output pixel: sample at ((i + 0.5)·s − 0.5), clamped at the edges."""
    h, w, _ = img.shape
    oh, ow = size
    out = np.zeros((3, oh, ow))
    for i in range(oh):
        y = min(max((i + 0.5) * h / oh - 0.5, 0), h - 1)
        y0, fy = int(math.floor(y)), y - math.floor(y)
        y1 = min(y0 + 1, h - 1)
        for j in range(ow):
            x = min(max((j + 0.5) * w / ow - 0.5, 0), w - 1)
            x0, fx = int(math.floor(x)), x - math.floor(x)
            x1 = min(x0 + 1, w - 1)
            out[:, i, j] = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1]) +
                            fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))
    return out


@pytest.mark.parametrize("size,crop", [((24, 24), "center"), ((30, 40), None), ((17, 23), [10, 20, 90, 100]),
                                       ((96, 96), "center")])
def test_area_is_the_exact_area_average(size, crop):
    f = frame()
    out = np.zeros((1, 3, *size), np.float32)
    Preprocess(f, out, size, "area", crop).run()
    top, left, ch, cw = crop_box(120, 160, crop, size)
    region = f[top:top + ch, left:left + cw]
    np.testing.assert_allclose(out[0], exact_area(region, size), atol=2e-3)
    if ch % size[0] == 0 and cw % size[1] == 0:       # whole blocks: PIL's BOX filter agrees
        np.testing.assert_allclose(out[0], pil_box(region, size), atol=2e-3)


@pytest.mark.parametrize("size", [(24, 24), (50, 70), (200, 100)])
def test_bilinear_matches_opencvs_rule(size):
    f = frame(40, 60, seed=1)
    out = np.zeros((3, *size), np.float32)
    Preprocess(f, out, size, "bilinear").run()
    np.testing.assert_allclose(out, cv_linear(f.astype(np.float64), size), atol=2e-3)


def test_layout_and_normalisation():
    f = frame(32, 32, seed=2)
    mean, std, scale = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 1 / 255
    chw, hwc = np.zeros((1, 3, 16, 16), np.float32), np.zeros((1, 16, 16, 3), np.float32)
    Preprocess(f, chw, (16, 16), "area", None, "chw", scale, mean, std).run()
    Preprocess(f, hwc, (16, 16), "area", None, "hwc", scale, mean, std).run()
    box = f.astype(np.float64).reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))          # 2×2 blocks: exact
    want = (box * scale - mean) / std
    np.testing.assert_allclose(hwc[0], want, atol=1e-5)
    np.testing.assert_allclose(chw[0], want.transpose(2, 0, 1), atol=1e-5)


@pytest.mark.parametrize("size", [(48, 48), (24, 24)])          # fractional taps; whole 5×5 blocks
def test_a_frame_is_processed_once_and_nothing_is_allocated(size):
    ch = Channel("frame", SENSOR, (120, 160, 3), 0, 255, dtype=np.dtype(np.uint8))
    s = Sample(ch)
    out = np.zeros((3, *size), np.float32)
    p = Preprocess(s.values, out, size, "area", "center", sample=s)
    np.copyto(s.values, frame())
    s.count += 1
    p.run()
    first = out.copy()
    np.copyto(s.values, frame(seed=9))                 # written without a new count: not a new frame
    p.run()
    assert np.array_equal(out, first)
    for _ in range(20):
        s.count += 1
        p.run()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(200):
        s.count += 1
        p.run()
    grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename") if d.size_diff > 0)
    tracemalloc.stop()
    assert grown < 4096, f"{grown} bytes kept over 200 frames"
    assert not np.array_equal(out, first)


CAMERA = '''
[board]
name = "cam"
rate_hz = 30

[[devices]]
name = "cam"
driver = "replay"
recording = "x.nnrec"

[[devices.channels]]
name = "frame"
kind = "sensor"
shape = [120, 160, 3]
range = [0, 255]
dtype = "uint8"

[[devices.channels]]
name = "u"
kind = "actuator"
shape = [1]
range = [-1, 1]

[[inputs]]
tensor = "image"
channels = ["cam.frame"]
image = IMAGE

[[outputs]]
tensor = "action"
channel = "cam.u"
'''


@pytest.mark.parametrize("image,message", [
    ('{ size = [96] }', "image size must be [height, width]"),
    ('{ size = [96, 96], resize = "cubic" }', "image resize must be one of"),
    ('{ size = [96, 96], crop = [100, 0, 50, 50] }', "does not fit a 120×160 frame"),
    ('{ size = [96, 96], std = [0.2, 0, 0.2] }', "image std must be 3 numbers (std > 0)"),
    ('{ size = [96, 96], colour = "bgr" }', "image must be {size = [h, w]"),
])
def test_image_binding_mistakes(tmp_path, image, message):
    p = tmp_path / "b.toml"
    p.write_text(CAMERA.replace("IMAGE", image))
    with pytest.raises(ConfigError, match=r"b\.toml:\d+") as e:
        load_board(str(p))
    assert message in str(e.value)


def test_an_image_binding_checks_the_models_input(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from nnos.compiler import compile
    from nnos_hardware.binding import Binder
    from nnos_hardware.devices import SimulatedDevice
    p = tmp_path / "b.toml"
    p.write_text(CAMERA.replace("IMAGE", '{ size = [24, 24], crop = "center", scale = 0.00392156862745098 }'))
    board = load_board(str(p))

    def model(shape):
        g = helper.make_graph([helper.make_node("Flatten", ["image"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["action"])],
                              "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 1])],
                              [numpy_helper.from_array(np.full((int(np.prod(shape)), 1), 1e-4, np.float32), "W")])
        path = str(tmp_path / f"m{len(shape)}.onnx")
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
        return compile(path, check=False)
    with pytest.raises(ConfigError, match=r"tensor 'image' is float32\[1, 3, 32, 32\], but the image pre-processing makes"):
        board.check_plan(model([1, 3, 32, 32]))
    plan = model([1, 3, 24, 24])
    board.check_plan(plan)
    dev = SimulatedDevice("cam", board.devices[0].channels)
    dev.open()
    exe = plan.bind("numpy")
    binder = Binder(board, {"cam": dev}, exe.inputs, exe.outputs)
    f = frame()
    dev.feed("frame", f)
    binder.read_inputs()
    want = pil_box(f[:, 20:140].astype(np.float64), (24, 24)) / 255
    np.testing.assert_allclose(exe.inputs["image"][0], want, atol=1e-4)
