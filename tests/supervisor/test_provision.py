"""Provisioning at the supervisor's start: the default model on a first start, and a board's
own default model when the board was changed to one the active model cannot drive."""
from __future__ import annotations

from nnos.store import ModelStore
from nnos.supervisor import up
from nnos_hardware.board import load_board
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
