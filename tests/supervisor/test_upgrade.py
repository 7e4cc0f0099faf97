"""A plan format change in an update: stored plans are recompiled from their kept source at the
supervisor's start and keep their place; one without a source is kept and named."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct

import nnos
from nnos_hardware.board import load_board
from nnos.plan.artifact import FORMAT_VERSION
from nnos.store import ModelStore
from nnos.supervisor.upgrade import recompile_outdated
from tests.support.paths import ROOT

POLICY = os.path.join(ROOT, "models", "cartpole", "cartpole.onnx")
BOARD = os.path.join(ROOT, "hardware", "boards", "cartpole-sim.toml")


def old_format(store: ModelStore, source: str | None) -> str:
    """A plan file as an nnos of the previous plan format wrote it, placed in the store (with
    the ONNX it came from when ``source``): its id is the hash of its bytes, its checksum holds."""
    data = bytearray(nnos.compile(POLICY, check=False).to_bytes()[:-32])
    struct.pack_into("<I", data, 8, FORMAT_VERSION - 1)
    data += hashlib.sha256(data).digest()
    mid = hashlib.sha256(data).hexdigest()
    with open(store.plan_path(mid), "wb") as f:
        f.write(data)
    if source:
        shutil.copyfile(source, os.path.join(store.models, mid + ".src"))
    return mid


def test_stored_plans_of_an_old_format_are_recompiled_and_keep_their_place(tmp_path):
    store = ModelStore(str(tmp_path))
    kept = old_format(store, POLICY)
    (tmp_path / "state.json").write_text(json.dumps({"active": kept, "previous": None, "history": []}))
    assert store.outdated() == [kept]
    said = []

    done = recompile_outdated(store, load_board(BOARD), said.append)

    new = done[kept]
    assert new
    assert new != kept
    assert store.state()["active"] == new
    assert store.load(new).meta["plan_format"] == FORMAT_VERSION
    assert store.report(new)["recompiled_from"] == kept
    assert store.source_path(new)
    assert not os.path.exists(store.plan_path(kept))
    last = store.state()["history"][-1]
    assert last["action"] == "replace"
    assert kept in last["reason"]
    assert "recompiled for plan format" in last["reason"]
    assert store.outdated() == []


def test_a_plan_without_its_source_is_kept_and_named(tmp_path):
    store = ModelStore(str(tmp_path))
    mid = old_format(store, None)
    said = []
    assert recompile_outdated(store, load_board(BOARD), said.append) == {mid: None}
    assert os.path.exists(store.plan_path(mid)), "never deleted"
    assert any(mid[:12] in line and "upload its ONNX model again" in line for line in said), said
    assert store.outdated() == [mid]


def test_an_upload_keeps_its_source_and_a_delete_removes_it(tmp_path):
    store = ModelStore(str(tmp_path))
    data = nnos.compile(POLICY, check=False).to_bytes()
    mid = store.put(data, {"format": "onnx"}, source=POLICY)
    with open(store.source_path(mid), "rb") as a, open(POLICY, "rb") as b:
        assert a.read() == b.read()
    store.delete(mid)
    assert store.source_path(mid) is None
    assert not store.outdated()


def test_on_a_device_with_update_slots_the_old_plan_stays_until_the_slot_is_kept(tmp_path):
    # issue 20 item 5: a rollback's older nnos must still find the plans it reads
    store = ModelStore(str(tmp_path))
    kept = old_format(store, POLICY)
    other = store.put(nnos.compile(POLICY, check=False).to_bytes())
    (tmp_path / "state.json").write_text(json.dumps({"active": kept, "previous": None, "history": []}))

    new = recompile_outdated(store, load_board(BOARD), print, keep_old=True)[kept]

    assert store.state()["active"] == new                         # this nnos runs the recompiled plan
    on_disk = json.loads((tmp_path / "state.json").read_text())
    assert on_disk["active"] == kept                               # the file an older nnos reads
    assert os.path.exists(store.plan_path(kept)) and store.source_path(kept)
    assert recompile_outdated(store, load_board(BOARD), print, keep_old=True) == {}, "not again at the next boot"
    store.activate(other)                                          # a change on probation keeps the old ids on disk
    assert store.state()["previous"] == new
    assert json.loads((tmp_path / "state.json").read_text())["previous"] == kept
    store.rollback()
    assert json.loads((tmp_path / "state.json").read_text())["active"] == kept

    assert store.commit_superseded() == [kept]                     # the slot is kept
    assert json.loads((tmp_path / "state.json").read_text())["active"] == new == store.state()["active"]
    assert not os.path.exists(store.plan_path(kept)) and not os.path.exists(tmp_path / "superseded.json")
    assert store.outdated() == [] and store.commit_superseded() == []


def test_a_mapping_to_a_plan_that_is_gone_is_no_mapping(tmp_path):
    store = ModelStore(str(tmp_path))
    kept = old_format(store, POLICY)
    (tmp_path / "state.json").write_text(json.dumps({"active": kept, "previous": None, "history": []}))
    (tmp_path / "superseded.json").write_text(json.dumps({kept: "0" * 64}))
    assert store.superseded() == {} and store.state()["active"] == kept
    assert store.commit_superseded() == []
    assert os.path.exists(store.plan_path(kept)), "the only plan is never removed"
