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
    assert loaded.meta == plan.meta
    assert loaded.memory == plan.memory


def test_loaded_weights_start_on_a_cache_line(plan, tmp_path):
    """A loaded plan's weights each start on a 64-byte boundary (the cpu backend reads them by
    vector loads: one starting 16 bytes into a line read two lines each)."""
    path = str(tmp_path / "p.nnos")
    plan.save(path)
    consts = nnos.load(path).graph.consts
    assert consts and all(a.ctypes.data % 64 == 0 and a.flags.c_contiguous for a in consts.values())


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
    assert b"\x80\x04\x95" not in data[:4096]
    assert b"pickle" not in data


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
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.nnos"]


def _with_header(raw_header: bytes) -> bytes:
    """A checksummed plan file around any header bytes (what a crafted upload would be)."""
    import hashlib
    prefix = struct.pack("<8sIIQ", artifact.MAGIC, artifact.FORMAT_VERSION, 0, len(raw_header))
    body = prefix + raw_header
    body += b"\0" * (-len(body) % 64)
    return body + hashlib.sha256(body).digest()


def _crafted(plan, edit):
    import json
    header, weights = artifact.read(plan.to_bytes())
    head = json.loads(json.dumps(artifact.encode_value(dict(header, weights={}))))
    edit(head)
    if "weights" not in head:
        head["weights"] = {}
    return _with_header(json.dumps(head).encode())


@pytest.mark.parametrize("what,edit,needle", [
    ("negative dims", lambda h: h["graph"]["types"].__setitem__(next(iter(h["graph"]["types"])),
                                                               {"dtype": "float32", "shape": [-4, 2]}), "negative"),
    ("a 10^12-byte arena", lambda h: h["memory"].__setitem__("arena_bytes", 10 ** 12), "NNOS_MAX_ARENA_BYTES"),
    ("weights as a list", lambda h: h.__setitem__("weights", [1, 2, 3]), "'weights'"),
    ("a weight of 2^40 elements", lambda h: h.__setitem__("weights", {"w": {"dtype": "float32", "shape": [1 << 20, 1 << 20],
                                                                            "offset": 0, "nbytes": 4 << 40}}),
     "NNOS_MAX_TENSOR_ELEMENTS"),
    ("a weight entry that is a string", lambda h: h.__setitem__("weights", {"w": "x"}), "must be an object"),
    ("a malformed embedded array", lambda h: h["meta"].__setitem__("x", {"__ndarray__": "float32", "shape": [3],
                                                                         "data": "%%%"}), "embedded array"),
    ("kernels as a list", lambda h: h.__setitem__("kernels", [1]), "'kernels' must be an object"),
    ("a kernel keyed by a name", lambda h: h.__setitem__("kernels", {"vulkan": {"../x": {
        "__ndarray__": "uint8", "shape": [4], "data": "AwIjBw=="}}}), "expected a sha256 key"),
    ("a kernel of floats", lambda h: h.__setitem__("kernels", {"vulkan": {"a" * 64: {
        "__ndarray__": "float32", "shape": [1], "data": "AAAAAA=="}}}), "uint8 array"),
    ("an embedded array of negative shape", lambda h: h["meta"].__setitem__("x", {"__ndarray__": "float32",
                                                                                   "shape": [-1], "data": ""}),
     "negative"),
])
def test_crafted_headers_are_refused_before_anything_is_allocated(plan, what, edit, needle):
    # regression (hardening): crafted headers with a valid checksum gave tracebacks (and a 500)
    with pytest.raises(nnos.PlanFormatError, match=needle):
        nnos.Plan.from_bytes(_crafted(plan, edit))


def test_generated_kernels_are_kept_with_the_plan(plan):
    """A backend's generated code (the vulkan backend's SPIR-V) travels in the plan file."""
    plan.kernels = {"vulkan": {"ab" * 32: b"\x03\x02\x23\x07" + bytes(range(20))}}
    try:
        back = nnos.Plan.from_bytes(plan.to_bytes())
    finally:
        plan.kernels = {}
    assert back.kernels == {"vulkan": {"ab" * 32: b"\x03\x02\x23\x07" + bytes(range(20))}}
    assert nnos.Plan.from_bytes(plan.to_bytes()).kernels == {}


def test_deep_json_header_is_refused():
    with pytest.raises(nnos.PlanFormatError, match="nested too deeply|not valid JSON"):
        nnos.Plan.from_bytes(_with_header(b"[" * 200_000 + b"]" * 200_000))
