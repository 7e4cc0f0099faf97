"""The plan file: round trip, no code execution, refusal of anything damaged or foreign."""
from __future__ import annotations

import struct

import numpy as np
import pytest

import nnos
from nnos.compiler import sample_inputs
from nnos.plan import artifact


@pytest.fixture(scope="module")
def plan(zoo):
    return nnos.compile(zoo["cnn_s"])


def test_save_load_same_outputs_bitwise(plan, tmp_path):
    path = str(tmp_path / "p.nnos")
    plan.save(path)
    loaded = nnos.load(path)
    feeds = sample_inputs(plan, seed=7)
    a = {k: v.copy() for k, v in plan(feeds).items()}
    b = loaded(feeds)
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert loaded.meta == plan.meta and loaded.memory == plan.memory


def test_load_does_not_recompile(plan, tmp_path, monkeypatch):
    path = str(tmp_path / "p.nnos")
    plan.save(path)
    import nnos.compiler
    import nnos.passes
    for mod, name in ((nnos.compiler, "compile"), (nnos.passes, "optimize")):
        monkeypatch.setattr(mod, name, lambda *a, **k: pytest.fail("load recompiled"))
    nnos.load(path)(sample_inputs(plan))


def test_header_records_versions_and_source(plan):
    header, _ = artifact.read(plan.to_bytes())
    assert header["nnos_version"] == nnos.__version__
    assert header["meta"]["plan_format"] == artifact.FORMAT_VERSION
    assert len(header["meta"]["source"]["source_sha256"]) == 64
    assert header["meta"]["inputs"][0] == {"name": "image", "dtype": "float32", "shape": [1, 3, 64, 64]}


def test_no_pickle_anywhere(plan):
    data = plan.to_bytes()
    assert b"\x80\x04\x95" not in data[:4096] and b"pickle" not in data


@pytest.mark.parametrize("cut", [0, 10, 100, -1, -33])
def test_truncated_file_is_refused(plan, cut):
    data = plan.to_bytes()
    with pytest.raises(nnos.PlanFormatError, match="truncated|too short"):
        nnos.Plan.from_bytes(data[:cut] if cut > 0 else data[:len(data) + cut] if cut else b"")


def test_tampered_byte_is_refused(plan):
    data = bytearray(plan.to_bytes())
    data[len(data) // 2] ^= 0x40                     # a weight bit
    with pytest.raises(nnos.PlanFormatError, match="checksum mismatch"):
        nnos.Plan.from_bytes(bytes(data))


def test_wrong_version_is_refused(plan):
    data = bytearray(plan.to_bytes())
    struct.pack_into("<I", data, 8, artifact.FORMAT_VERSION + 1)
    with pytest.raises(nnos.PlanFormatError, match=f"plan format version {artifact.FORMAT_VERSION + 1}"):
        nnos.Plan.from_bytes(bytes(data))


def test_not_a_plan(tmp_path):
    with pytest.raises(nnos.PlanFormatError, match="not an nnos plan"):
        nnos.Plan.from_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(nnos.PlanFormatError, match="cannot read plan"):
        nnos.load(str(tmp_path / "absent.nnos"))


def test_consistent_but_malformed_header_is_refused():
    # a well-formed checksummed file whose header lies: refused by validation, not a crash
    data = artifact.write({"graph": {"nodes": [{"op": "Exec", "name": "x", "inputs": [], "outputs": [],
                                                "attrs": {}, "epilogue": []}],
                                     "inputs": [], "outputs": [], "types": {}, "name": "g"},
                           "memory": {}, "meta": {}}, {})
    with pytest.raises(nnos.PlanFormatError, match="op 'Exec'"):
        nnos.Plan.from_bytes(data)
    data = artifact.write({"graph": {"nodes": []}}, {})
    with pytest.raises(nnos.PlanFormatError, match="malformed"):
        nnos.Plan.from_bytes(data)


def test_out_of_arena_offset_is_refused(plan):
    header, weights = artifact.read(plan.to_bytes())
    name = next(iter(header["memory"]["tensors"]))
    header["memory"]["tensors"][name] = header["memory"]["arena_bytes"]
    header.pop("weights")
    with pytest.raises(nnos.PlanFormatError, match="outside"):
        nnos.Plan.from_bytes(artifact.write(header, weights))


def test_save_is_atomic(plan, tmp_path, monkeypatch):
    path = tmp_path / "p.nnos"
    plan.save(str(path))
    before = path.read_bytes()
    import os

    def boom(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        plan.save(str(path))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["p.nnos"]
