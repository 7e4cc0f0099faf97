"""Board configs: the bundled ones load; every mistake is refused with FILE:LINE."""
from __future__ import annotations

import glob
import os
import textwrap

import numpy as np
import pytest

import nnos
from nnos_hardware.board import load_board
from nnos_hardware.errors import ConfigError
from tests.support.paths import ROOT

BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "hardware", "boards", "*.toml"))))
def test_bundled_boards_load_and_match_their_model(path):
    board = load_board(path)
    assert board.devices
    assert board.inputs
    assert board.outputs
    if board.model:
        board.check_plan(nnos.compile(board.model, check=False))


def _write(tmp_path, text):
    p = tmp_path / "b.toml"
    p.write_text(textwrap.dedent(text))
    return str(p)


def _variant(tmp_path, old, new):
    text = open(BOARD).read()
    assert old in text
    return _write(tmp_path, text.replace(old, new, 1))


def _line_of(path, needle):
    return next(i + 1 for i, line in enumerate(open(path).read().splitlines()) if needle in line)


@pytest.mark.parametrize("old,new,message,needle", [
    ('kind = "sensor"', 'kind = "sensr"', "kind must be 'sensor' or 'actuator'", 'kind = "sensr"'),
    ("shape = [2]", "shape = [0]", "shape must be a list of positive integers", "shape = [0]"),
    ("range = [-10.0, 10.0]", "range = [10.0, -10.0]", "range must be [low, high]", "range = [10.0, -10.0]"),
    ("safe = 0.0", "safe = 50.0", "safe value 50.0 must lie in its range", "safe = 50.0"),
    ('channels = ["cartpole.cart", "cartpole.pole"]', 'channels = ["cartpole.cart", "cartpole.tilt"]',
     "unknown channel 'cartpole.tilt'", "cartpole.tilt"),
    ('channel = "cartpole.force"', 'channel = "cartpole.cart"', "is a sensor, an output binding needs a actuator",
     'channel = "cartpole.cart"'),
    ("clamp = [-10.0, 10.0]", "clamp = [-20.0, 10.0]", "must lie inside channel cartpole.force's range",
     "clamp = [-20.0"),
    ("rate_hz = 50", "rate_hz = 5000", "rate_hz must be a number from 1 to 1000", "rate_hz = 5000"),
    ("rate_hz = 50", "rate_hz = 50\nmodel_cpus = 0", "model_cpus must be a whole number of CPUs from 1", "model_cpus = 0"),
    ("rate_hz = 50", "rate_hz = 50\nmodel_cpus = 2.5", "got 2.5", "model_cpus = 2.5"),
    ('driver = "nnos-serial"', 'driver = "canbus"', "driver must be one of", 'driver = "canbus"'),
    # regression (hardening): unknown keys were ignored, so a typo silently changed nothing
    ('driver = "nnos-serial"', 'driver = "nnos-serial"\nbaud_rate = 1000000',
     "unknown key 'baud_rate' in [devices]; did you mean 'baudrate'",
     "baud_rate = 1000000"),
    ("rate_hz = 50", "rate = 30", "unknown key 'rate' in [board]; did you mean 'rate_hz'?", "rate = 30"),
    ("stale_ms = 100", "stale = 100", "unknown key 'stale' in [channels]; did you mean 'stale_ms'?", "stale = 100"),
    ("scale = 10.0", "scael = 10.0", "unknown key 'scael' in [outputs]; did you mean 'scale'?", "scael = 10.0"),
    ("stale_ms = 100", 'stale_ms = 100\nout_of_range = "ignore"', "out_of_range must be 'failsafe'",
     'out_of_range = "ignore"'),
])
def test_mistakes_name_their_line(tmp_path, old, new, message, needle):
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as e:
        load_board(path)
    assert message in str(e.value)
    assert str(e.value).startswith(f"{path}:{_line_of(path, needle)}:"), str(e.value)


def test_toml_syntax_error_names_the_line(tmp_path):
    path = _write(tmp_path, "[board]\nname = 'x'\nrate_hz = = 5\n")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 3"):
        load_board(path)


def test_two_finders_are_refused(tmp_path):
    path = _variant(tmp_path, 'simulator = ["python"', 'path = "/dev/ttyACM0"\nsimulator = ["python"')
    with pytest.raises(ConfigError, match="exactly one of path, usb, simulator, recording"):
        load_board(path)


def test_plan_that_does_not_match_the_bindings(tmp_path, zoo):
    board = load_board(BOARD)
    with pytest.raises(ConfigError, match=r"input binding names tensor 'obs'.*inputs are \['image'\]"):
        board.check_plan(nnos.compile(zoo["cnn_s"], check=False))
    path = _variant(tmp_path, 'channels = ["cartpole.cart", "cartpole.pole"]', 'channels = ["cartpole.cart"]')
    with pytest.raises(ConfigError, match=r"tensor 'obs' is float32\[1, 4\], but its channels give 2 float32 values") as e:
        load_board(path).check_plan(nnos.compile(board.model, check=False))
    assert str(e.value).startswith(f"{path}:{_line_of(path, '[[inputs]]')}:")


def test_usb_identity_is_validated(tmp_path):
    path = _variant(tmp_path, 'simulator = ["python", "-m", "nnos_hardware.sim", "cartpole"]',
                    'usb = { vendor = 0x0403, product = 70000 }')
    with pytest.raises(ConfigError, match="16-bit integers"):
        load_board(path)
    path = _variant(tmp_path, 'simulator = ["python", "-m", "nnos_hardware.sim", "cartpole"]',
                    'usb = { vendor = 0x0403, product = 0x6001, serial = "A10K1234" }')
    assert load_board(path).devices[0].usb == {"vendor": 0x403, "product": 0x6001, "serial": "A10K1234"}


def test_scale_and_offset_lengths(tmp_path):
    path = _variant(tmp_path, 'channels = ["cartpole.cart", "cartpole.pole"]',
                    'channels = ["cartpole.cart", "cartpole.pole"]\nscale = [1, 2, 3]')
    with pytest.raises(ConfigError, match="scale must have 4 values, got 3"):
        load_board(path)
    path = _variant(tmp_path, 'channels = ["cartpole.cart", "cartpole.pole"]',
                    'channels = ["cartpole.cart", "cartpole.pole"]\nscale = 2.0\noffset = [0, 0, 0.5, 0]')
    b = load_board(path).inputs[0]
    assert np.allclose(b.scale, 2)
    assert np.allclose(b.offset, [0, 0, 0.5, 0])


def test_model_cpus_defaults_to_the_loops_own_and_is_read(tmp_path):
    assert load_board(BOARD).model_cpus == 1
    assert load_board(_variant(tmp_path, "rate_hz = 50", "rate_hz = 50\nmodel_cpus = 3")).model_cpus == 3


def test_model_cpus_with_an_asynchronous_policy_is_refused(tmp_path):
    path = _write(tmp_path, open(os.path.join(ROOT, "hardware", "boards", "vision_so101.toml")).read()
                  .replace("infer_every = 3", "infer_every = 3\nmodel_cpus = 2", 1))
    with pytest.raises(ConfigError, match="with infer_every = 3 the policy already runs on a worker beside the loop") as e:
        load_board(path)
    assert str(e.value).startswith(f"{path}:{_line_of(path, 'model_cpus = 2')}:"), str(e.value)
