"""Provisioning at the supervisor's start: the default model on a first start, and a board's
own default model when the board was changed to one the active model cannot drive."""
from __future__ import annotations

import pytest

from nnos.store import ModelStore
from nnos.supervisor import up
from nnos_hardware.board import load_board
from nnos_hardware.errors import ConfigError
from tests.support.paths import BOARDS, ROOT
from tests.support.policies import board_at


def test_a_board_the_active_model_does_not_fit_gets_its_default(tmp_path, capsys):
    store = ModelStore(str(tmp_path / "data"))
    cartpole = board_at(tmp_path)
    up.provision(cartpole, store)                                  # first start: the board's model
    first = store.state()["active"]
    assert first and "provisioned cartpole.onnx" in capsys.readouterr().err
    up.provision(cartpole, store)                                  # it fits: nothing to do
    assert store.state()["active"] == first
    text = open(f"{BOARDS}/vision_so101.toml").read().replace('model = "models/', f'model = "{ROOT}/models/')
    (tmp_path / "vision.toml").write_text(text)
    vision = load_board(str(tmp_path / "vision.toml"))
    up.provision(vision, store)
    now = store.state()["active"]
    assert now != first and f"the active model {first[:12]} does not fit board vision-so101" in capsys.readouterr().err
    vision.check_plan(store.load(now))


def test_a_bundled_model_is_found_from_a_board_outside_the_tree(tmp_path):
    """A board in the appliance's /data/config names models/… : nnos's bundled models."""
    (tmp_path / "config").mkdir()
    p = tmp_path / "config" / "board.toml"
    p.write_text(open(f"{BOARDS}/vision_so101.toml").read())
    board = load_board(str(p))
    assert board.model.endswith("vision/follow.onnx") and open(board.model, "rb").read(4)


def test_an_unreadable_board_is_set_aside_and_the_default_restored(tmp_path, capsys):
    """The board in the data partition's config, broken (by hand, or by a card's config before
    boot-partition import checked it): the supervisor starts on the image's default, keeps the
    bad one beside it and says both."""
    default = tmp_path / "default.toml"
    default.write_text(open(f"{BOARDS}/cartpole-sim.toml").read())
    board = tmp_path / "board.toml"
    board.write_text('[board]\nname = "x"\nrate_hz = "fast"\n')
    got = up.load_or_restore(str(board), str(default))
    assert got.name == "cartpole-sim" and board.read_text() == default.read_text()
    assert (tmp_path / "board.toml.bad").read_text() == '[board]\nname = "x"\nrate_hz = "fast"\n'
    said = capsys.readouterr().err
    assert "rate_hz must be a number" in said and f"board config restored from {default}" in said
    board.write_text("[board\n")
    with pytest.raises(ConfigError, match="not valid TOML"):      # no default to restore: the error stands
        up.load_or_restore(str(board), None)
