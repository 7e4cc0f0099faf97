"""The camera: pixel formats decoded against independent references (a float BT.601 formula,
Pillow's JPEG decoder), the capture thread's latest-frame handoff on the synthetic camera,
every bad frame counted without stopping the stream, an unplugged camera raised to the loop,
the board's camera entries, and the V4L2 transport's errors on a machine without cameras."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from nnos_hardware.board import load_board
from nnos_hardware.devices.factory import make_devices
from nnos_hardware.errors import ConfigError, TransportError
from nnos_hardware.protocol.pixels import Decoder, FrameError, encode_jpeg, encode_yuyv
from nnos_hardware.sim.camera import DISK, Scene, target
from tests.support.timing import scaled, wait_until

H, W = 120, 160


def _frame(seed=0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb[20:60, 30:90] = DISK
    return rgb


def _yuyv_reference(buf: bytes, h: int, w: int) -> np.ndarray:
    """BT.601 limited range in float64, written out per pixel (the textbook formula)."""
    p = np.frombuffer(buf, np.uint8).reshape(h, w // 2, 4).astype(np.float64)
    y = np.empty((h, w))
    y[:, 0::2], y[:, 1::2] = p[..., 0], p[..., 2]
    u, v = np.repeat(p[..., 1], 2, axis=1) - 128, np.repeat(p[..., 3], 2, axis=1) - 128
    c = 1.164383 * (y - 16)
    rgb = np.stack([c + 1.596027 * v, c - 0.391762 * u - 0.812968 * v, c + 2.017232 * u], -1)
    return np.clip(np.rint(rgb), 0, 255)


def test_yuyv_decodes_as_the_bt601_formula_and_round_trips():
    rgb = _frame()
    buf = encode_yuyv(rgb)
    assert len(buf) == H * W * 2
    out = np.zeros((H, W, 3), np.uint8)
    Decoder("cam", "YUYV", W, H).decode(buf, out)
    assert np.abs(out.astype(int) - _yuyv_reference(buf, H, W)).max() <= 1
    assert np.abs(out[25:55, 35:85].astype(int) - DISK).max() <= 2          # flat colour survives 4:2:2


def test_mjpg_decodes_as_pillow_does_and_rgb3_honours_row_padding():
    rgb = _frame(1)
    jpeg = encode_jpeg(rgb)
    out = np.zeros((H, W, 3), np.uint8)
    Decoder("cam", "MJPG", W, H).decode(jpeg, out)
    assert np.array_equal(out, np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
    stride = W * 3 + 64
    padded = np.zeros((H, stride), np.uint8)
    padded[:, :W * 3] = rgb.reshape(H, -1)
    Decoder("cam", "RGB3", W, H, stride).decode(padded.tobytes(), out)
    assert np.array_equal(out, rgb)


@pytest.mark.parametrize("fourcc,data,expect", [
    ("MJPG", lambda rgb: encode_jpeg(rgb)[:2000], "does not decode"),                 # truncated
    ("MJPG", lambda rgb: encode_jpeg(rgb[:60]), "MJPG frame is 160×60; negotiated 160×120"),
    ("MJPG", lambda rgb: encode_yuyv(rgb), "does not decode"),                         # not what was negotiated
    ("YUYV", lambda rgb: encode_yuyv(rgb)[:-10], f"YUYV frame of {H * W * 2 - 10} bytes; 160×120 needs {H * W * 2}"),
    ("YUYV", lambda rgb: rgb.tobytes(), f"YUYV frame of {H * W * 3} bytes"),           # RGB sent for YUYV
])
def test_a_frame_that_is_not_what_was_negotiated_is_a_frame_error(fourcc, data, expect):
    out = np.full((H, W, 3), 7, np.uint8)
    with pytest.raises(FrameError, match=expect):
        Decoder("cam", fourcc, W, H).decode(data(_frame()), out)


def _board(tmp_path, fmt="YUYV", fps=30, extra="", driver="synthetic-camera"):
    p = tmp_path / "cam.toml"
    p.write_text(f'[board]\nname = "cam"\nrate_hz = 100\n\n[[devices]]\nname = "cam"\ndriver = "{driver}"\n'
                 f'camera = {{ width = {W}, height = {H}, fps = {fps}, format = "{fmt}" }}\n{extra}')
    return load_board(str(p))


def _disk_centre(frame: np.ndarray) -> tuple[float, float]:
    red = (frame[..., 0] > 180) & (frame[..., 1] < 90)
    ys, xs = np.nonzero(red)
    return xs.mean() / (frame.shape[1] - 1), ys.mean() / (frame.shape[0] - 1)


@pytest.mark.parametrize("fmt", ["YUYV", "MJPG", "RGB3"])
def test_the_channel_holds_the_newest_frame_with_its_timestamp(tmp_path, fmt):
    board = _board(tmp_path, fmt)
    cam = make_devices(board)["cam"]
    s = cam.samples["frame"]
    with cam:
        wait_until(lambda: cam.poll() and s.count >= 3, 5, what="three frames")
        time.sleep(0.2)                              # several frames queue up; one poll takes the newest
        cam.poll()
        assert time.monotonic() - s.t_host < 0.1 + scaled(0.05)
        x, y = _disk_centre(s.values)
        tx, ty = target(s.t_device_us / 1e6)          # the scene at the frame's own timestamp
        assert abs(x - tx) < 0.03 and abs(y - ty) < 0.03, (x, y, tx, ty)
        st = cam.stats()
        assert st["format"] == f"{fmt} {W}x{H} @ 30 fps" and st["bad_frames"] == 0 and st["frames"] >= 4


def test_bad_frames_are_counted_and_the_stream_goes_on(tmp_path):
    cam = make_devices(_board(tmp_path, "MJPG"))["cam"]
    with cam:
        for fault in ("truncated", "size", "format"):
            cam.world.inject(fault)
        wait_until(lambda: cam.stats()["bad_frames"] == 3, 5, what="three bad frames")
        n = cam.stats()["frames"]
        wait_until(lambda: cam.stats()["frames"] > n and cam.poll() >= 0, 5, what="good frames after them")
        assert "negotiated" in cam.stats()["last_bad_frame"] or "decode" in cam.stats()["last_bad_frame"]


def test_an_unplugged_camera_raises_and_opens_again_when_it_is_back(tmp_path):
    cam = make_devices(_board(tmp_path))["cam"]
    with cam:
        wait_until(lambda: cam.poll() >= 0 and cam.samples["frame"].count > 0, 5, what="a frame")
        cam.world.unplug()

        def raised():
            try:
                cam.poll()
            except TransportError as e:
                return str(e)
        msg = wait_until(raised, 5, what="the unplug to reach poll")
        assert "cam: camera stream failed" in msg and "unplugged" in msg
        cam.close()
        with pytest.raises(TransportError, match="unplugged"):
            cam.open()
        cam.world.replug()
        cam.open()
        n = cam.samples["frame"].count
        wait_until(lambda: cam.poll() >= 0 and cam.samples["frame"].count > n, 5, what="frames again")
        assert cam.stats()["opens"] == 2


@pytest.mark.parametrize("extra,message", [
    ('[[devices.channels]]\nname = "frame"\nkind = "sensor"\nshape = [120, 160]\nrange = [0, 255]\ndtype = "uint8"\n',
     r"channel 'frame' must be a uint8 sensor of shape \[120, 160, 3\]"),
    ('[[devices.channels]]\nname = "depth"\nkind = "sensor"\nshape = [1]\nrange = [0, 1]\n', "has one channel, 'frame'"),
])
def test_a_camera_channel_that_disagrees_with_the_camera_is_refused(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        _board(tmp_path, extra=extra)


def test_camera_keys_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="camera format must be one of auto, YUYV, MJPG, RGB3, got 'H264'"):
        _board(tmp_path, "H264")
    with pytest.raises(ConfigError, match="device 'cam' needs exactly one of path, usb, simulator, recording"):
        _board(tmp_path, driver="v4l2")
    p = tmp_path / "serial.toml"
    p.write_text('[board]\nname = "x"\nrate_hz = 50\n[[devices]]\nname = "a"\ndriver = "nnos-serial"\npath = "/dev/x"\n'
                 'camera = { width = 64, height = 48, fps = 30 }\n')
    with pytest.raises(ConfigError, match=r"serial.toml:8: .*camera belongs to a camera"):
        load_board(str(p))


def test_v4l2_errors_name_what_is_missing(tmp_path):
    from nnos_hardware.v4l2 import V4L2Stream, find
    with pytest.raises(TransportError, match="cannot open camera /nonexistent/video9"):
        V4L2Stream("cam", "/nonexistent/video9", 640, 480, 30, "auto")
    try:
        import pyudev
        pyudev.Context()
    except Exception:                                        # noqa: BLE001 — no udev: nothing to look in
        pytest.skip("no udev database here")
    with pytest.raises(TransportError, match="no USB camera 1234:5678 serial X"):
        find("cam", {"vendor": 0x1234, "product": 0x5678, "serial": "X"})


def test_scene_renders_the_disk_where_target_says():
    s = Scene(96, 128)
    for t in (0.0, 1.7, 5.2):
        x, y = _disk_centre(s.render(*target(t)))
        assert abs(x - target(t)[0]) < 0.02 and abs(y - target(t)[1]) < 0.02


def test_a_usb_camera_is_found_by_identity_under_umockdev():
    """The capture node, not the metadata one, of the camera with that vendor/product (and
    serial), at whatever /dev/video number it got."""
    import json
    import os
    import shutil
    import subprocess
    if shutil.which("umockdev-run") is None:
        pytest.skip("umockdev-run is not installed (./build.sh setup installs it)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    py = os.path.join(root, ".venv", "bin", "python")
    r = subprocess.run(["umockdev-run", "--", py if os.path.exists(py) else "python3",
                        os.path.join(root, "tests", "hardware", "camera_scenario.py")],
                       capture_output=True, text=True, timeout=60, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["none"].startswith("error: cam: no USB camera 046d:0825 (video devices seen: none)"), out
    assert out["one"] == "/dev/video2", out
    assert out["by_serial"] == "/dev/video4", out
    assert "no USB camera 046d:0825 serial 00000000" in out["other_serial"] and "serial B1A2C3D4" in out["other_serial"]
    assert out["other_product"].startswith("error: cam: no USB camera 046d:085b"), out
