"""Framing, CRC and frame payloads of nnos serial protocol v1, and the link's robustness."""
from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest

from nnos_hardware.protocol import frames as fr
from nnos_hardware.protocol.cobs import CobsError, cobs_decode, cobs_encode
from nnos_hardware.protocol.link import MAX_ENCODED, Link
from nnos_hardware.sim import cartpole
from nnos_hardware.transport import FdTransport


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00", b"\x11\x22\x00\x33", bytes(range(1, 255)),
                                  bytes(range(1, 256)), bytes(300), np.random.default_rng(5).bytes(1000)],
                         ids=["empty", "zero", "zeros", "mixed", "254-run", "255-run", "300-zeros", "random"])
def test_cobs_round_trip_without_zeros(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data


def test_cobs_example_from_the_spec():
    assert cobs_encode(bytes.fromhex("11220033")) == bytes.fromhex("0311220233")


@pytest.mark.parametrize("bad", [b"\x05\x01\x02", b"\x02\x00", b"\x00"])
def test_cobs_rejects_malformed(bad):
    with pytest.raises(CobsError):
        cobs_decode(bad)


def test_crc_check_value():
    assert fr.crc16(b"123456789") == 0x29B1


def test_describe_round_trip():
    chans = cartpole.channels()
    version, dev_id, firmware, got = fr.parse_describe(fr.describe("dev-7", "fw 2", chans))
    assert (version, dev_id, firmware) == (1, "dev-7", "fw 2")
    assert [(c.name, c.kind, c.shape, c.safe) for c in got] == [(c.name, c.kind, c.shape, c.safe) for c in chans]


def test_describe_truncated_is_a_frame_error():
    data = fr.describe("dev", "fw", cartpole.channels())
    for cut in (1, 5, len(data) // 2, len(data) - 1):
        with pytest.raises(fr.FrameError):
            fr.parse_describe(data[:cut])


def test_values_payload_lengths_are_checked():
    p = fr.values_payload(42, [(1, np.float32([1, 2])), (2, np.float32([3, 4]))])
    ts, entries = fr.parse_values(p, {1: 2, 2: 2})
    assert ts == 42
    assert [c for c, _ in entries] == [1, 2]
    with pytest.raises(fr.FrameError, match="unknown channel id 2"):
        fr.parse_values(p, {1: 2})
    with pytest.raises(fr.FrameError, match="expected"):
        fr.parse_values(p[:-1], {1: 2, 2: 2})


# --- the link over a real byte pipe ---------------------------------------------------------
@pytest.fixture
def pipe_link():
    r, w = os.pipe()
    os.set_blocking(r, False)
    rx = Link(FdTransport(r, "rx"), "rx")
    tx = Link(FdTransport(w, "tx"), "tx")
    yield rx, tx, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _hb(i):
    return fr.TS.pack(i)


def test_frames_survive_garbage_and_corruption(pipe_link):
    rx, tx, w = pipe_link
    tx.send(fr.FrameType.HEARTBEAT, _hb(1))
    os.write(w, b"\x13\x37garbage without delimiter" + b"\x00")          # bad COBS/CRC, then resync
    frame = bytearray(fr.encode_frame(fr.FrameType.HEARTBEAT, 1, _hb(3)))
    frame[3] ^= 0xFF                                                      # corrupt payload: CRC fails
    from nnos_hardware.protocol.cobs import cobs_encode as enc
    os.write(w, enc(bytes(frame)) + b"\x00")
    os.write(w, enc(b"\x01") + b"\x00")                                   # too short for a frame
    os.write(w, enc(fr.encode_frame(0x55, 2, b"")) + b"\x00")            # unknown type
    tx.send(fr.FrameType.HEARTBEAT, _hb(4))
    got = []
    deadline = time.monotonic() + 2
    while len(got) < 2 and time.monotonic() < deadline:
        got += rx.poll(0.1)
    assert [fr.TS.unpack(f.payload)[0] for f in got] == [1, 4]
    s = rx.stats
    assert s.crc_errors == 1
    assert s.short_frames == 1
    assert s.unknown_type == 1
    assert s.cobs_errors + s.crc_errors >= 1
    assert s.faults() >= 4


def test_partial_reads_reassemble(pipe_link):
    rx, tx, w = pipe_link
    from nnos_hardware.protocol.cobs import cobs_encode as enc
    data = b"".join(enc(fr.encode_frame(fr.FrameType.HEARTBEAT, i, _hb(i))) + b"\x00" for i in range(20))
    got = []
    for b in data:                      # one byte at a time, like a slow UART
        os.write(w, bytes([b]))
        got += rx.poll(0.0)
    got += rx.poll(0.05)
    assert [fr.TS.unpack(f.payload)[0] for f in got] == list(range(20))
    assert rx.stats.faults() == 0
    assert rx.stats.seq_gaps == 0


def test_lost_frames_are_counted_from_sequence_numbers(pipe_link):
    rx, tx, w = pipe_link
    from nnos_hardware.protocol.cobs import cobs_encode as enc
    for seq in (0, 1, 4, 5):            # 2 and 3 never arrive
        os.write(w, enc(fr.encode_frame(fr.FrameType.HEARTBEAT, seq, _hb(seq))) + b"\x00")
    got = rx.poll(0.1) + rx.poll(0.05)
    assert len(got) == 4
    assert rx.stats.seq_gaps == 2


def test_flood_keeps_memory_bounded_and_calls_short(pipe_link):
    rx, tx, w = pipe_link
    os.set_blocking(w, False)
    flood = bytes(np.random.default_rng(0).integers(1, 256, 200_000, dtype=np.uint8))   # no delimiter at all
    tracemalloc.start()
    written = 0
    t_max = 0.0
    while written < len(flood):
        try:
            written += os.write(w, flood[written:written + 32768])
        except BlockingIOError:
            pass
        t0 = time.monotonic()
        rx.poll(0.01)
        t_max = max(t_max, time.monotonic() - t0)
        assert len(rx._buf) <= MAX_ENCODED
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000
    assert t_max < 0.5
    assert rx.stats.oversize >= 1
    assert rx.stats.garbage_bytes >= 190_000
    tx.send(fr.FrameType.HEARTBEAT, _hb(7))     # and the next real frame still gets through
    os.write(w, b"\x00")
    tx.send(fr.FrameType.HEARTBEAT, _hb(8))
    got = []
    for _ in range(20):
        got += rx.poll(0.05)
    assert 8 in [fr.TS.unpack(f.payload)[0] for f in got]


def test_poll_never_blocks_past_its_timeout(pipe_link):
    rx, _, _ = pipe_link
    t0 = time.monotonic()
    assert rx.poll(0.05) == []
    assert 0.04 <= time.monotonic() - t0 < 0.2
