"""Dynamixel Protocol 2.0 (CRC-16, byte stuffing), the X-series register tables as data, and the
simulated bus — checked against ROBOTIS's own SDK (dynamixel_sdk from PyPI, unmodified): its
CRC and stuffing as the reference for ours, and as a client of the simulated servos over a pty."""
from __future__ import annotations

import random
import time

import pytest

from nnos_hardware.devices.servo_bus import ServoBusDevice
from nnos_hardware.protocol import dynamixel as dx
from nnos_hardware.registers import load
from tests.support.servo_sim import dynamixel_bus
from tests.support.timing import wait_until

XL430 = load("dynamixel", "xl430-w250")


def test_packets_match_the_documented_bytes_and_the_sdk():
    assert dx.ping(1) == bytes.fromhex("fffffd0001030001194e")          # ROBOTIS e-manual's ping example
    sdk = pytest.importorskip("dynamixel_sdk.protocol2_packet_handler").Protocol2PacketHandler()
    rng = random.Random(7)
    for n in (0, 1, 10, 300):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert dx.crc16(data) == sdk.updateCRC(0, list(data), len(data))
    # a write whose data holds a header: stuffed the way the SDK stuffs it
    tx = [0xFF, 0xFF, 0xFD, 0x00, 3, 0, 0, dx.WRITE, 116, 0, 0xFF, 0xFF, 0xFD, 0x00, 0, 0]
    tx[5:7] = (len(tx) - 7).to_bytes(2, "little")
    stuffed = sdk.addStuffing(list(tx))
    ours = dx.write(3, 116, bytes((0xFF, 0xFF, 0xFD, 0x00)))
    assert bytes(stuffed[:-2]) == ours[:-2], "the same stuffed body"
    assert dx.Parser().feed(ours)[0].params == bytes((116, 0, 0xFF, 0xFF, 0xFD, 0x00))


def test_the_parser_resynchronises_and_counts():
    good = dx.status(2, 0, b"\x01\x02\x03\x04")
    bad = bytearray(dx.status(3, 0, b"\x05"))
    bad[-1] ^= 0x55
    p = dx.Parser()
    stream = b"\xff\xff\x00" + bytes(bad) + good + dx.ping(9)
    got = [x for i in range(0, len(stream), 5) for x in p.feed(stream[i:i + 5])]
    assert [(x.servo_id, x.instruction, x.error, x.data) for x in got] == [
        (2, dx.STATUS, 0, b"\x01\x02\x03\x04"), (9, dx.PING, 0, b"")]
    assert p.stats.checksum_errors == 1
    assert dx.describe_error(0x87) == "access error (hardware alert)"


def test_x_series_tables_are_data_with_twos_complement():
    assert (XL430["Torque_Enable"].address, XL430["Goal_Position"].address, XL430["Present_Position"].address) == (64, 116, 132)
    assert XL430["Goal_Position"].encode(-3, "little") == bytes.fromhex("fdffffff")
    assert XL430["Present_Position"].decode(bytes.fromhex("fdffffff"), "little") == -3
    assert "Goal_Current" in load("dynamixel", "xl330-m288").registers
    assert "Goal_Current" not in XL430.registers, "the XL430 has no current control"


@pytest.fixture
def sdk(servo_sdk):
    return servo_sdk("dynamixel_sdk", 2.0)


def test_the_sdk_pings_reads_and_writes_simulated_x_series_servos(sdk):
    dxl, connect = sdk
    with dynamixel_bus("--servos", "2") as path:
        port, ph = connect(path)
        model, result, error = ph.ping(port, 1)
        assert result == dxl.COMM_SUCCESS, ph.getTxRxResult(result)
        assert (model, error) == (XL430.model_number, 0)
        assert ph.ping(port, 5)[1] == dxl.COMM_RX_TIMEOUT
        pos, result, _ = ph.read4ByteTxRx(port, 2, XL430["Present_Position"].address)
        assert (pos, result) == (2048, dxl.COMM_SUCCESS)
        goal = XL430["Goal_Position"]
        assert ph.write4ByteTxRx(port, 2, goal.address, (-100) & 0xFFFFFFFF)[0] == dxl.COMM_SUCCESS
        raw, _, _ = ph.read4ByteTxRx(port, 2, goal.address)
        assert goal.decode(raw.to_bytes(4, "little"), "little") == -100
        result, error = ph.write4ByteTxRx(port, 2, XL430["Present_Position"].address, 5)
        assert result == dxl.COMM_SUCCESS
        assert dx.describe_error(error) == "access error"


def test_a_sync_write_moves_every_servo_and_a_sync_read_follows(sdk):
    dxl, connect = sdk
    with dynamixel_bus("--servos", "5", "--model", "xl330-m288") as path:
        port, ph = connect(path)
        ids = list(range(1, 6))
        for sid in ids:
            assert ph.write1ByteTxRx(port, sid, 64, 1)[0] == dxl.COMM_SUCCESS
        goals = {sid: 2048 - 150 * sid for sid in ids}
        writer = dxl.GroupSyncWrite(port, ph, 116, 4)
        for sid, g in goals.items():
            assert writer.addParam(sid, list((g & 0xFFFFFFFF).to_bytes(4, "little")))
        t0 = time.monotonic()
        assert writer.txPacket() == dxl.COMM_SUCCESS
        reader = dxl.GroupSyncRead(port, ph, 132, 4)
        for sid in ids:
            assert reader.addParam(sid)

        def at_goal():
            if reader.txRxPacket() != dxl.COMM_SUCCESS:
                return None
            got = {sid: int.from_bytes(reader.getData(sid, 132, 4).to_bytes(4, "little"), "little", signed=True)
                   for sid in ids}
            return got if got == goals else None
        wait_until(at_goal, 10, "every servo at its goal")
        assert time.monotonic() - t0 >= 750 / 3400 * 0.9, "no faster than the servo's top speed"


def test_the_sdk_fast_sync_reads_a_mixed_koch_bus(sdk):
    """FAST_SYNC_READ: one status packet for every servo, as ROBOTIS's SDK parses it — on a bus
    of XL430s and XL330s, whose Present_Position shares one address."""
    dxl, connect = sdk
    models = "xl430-w250,xl430-w250,xl330-m288,xl330-m288"
    with dynamixel_bus("--servos", "4", "--model", models) as path:
        port, ph = connect(path)
        ids = [1, 2, 3, 4]
        for sid, goal in zip(ids, (1500, 1700, 2300, 2500)):
            assert ph.write1ByteTxRx(port, sid, 64, 1)[0] == dxl.COMM_SUCCESS
            assert ph.write4ByteTxRx(port, sid, 116, goal)[0] == dxl.COMM_SUCCESS
        reader = dxl.GroupSyncRead(port, ph, 132, 4)
        for sid in ids:
            assert reader.addParam(sid)

        def at_goals():
            if reader.fastSyncRead() != dxl.COMM_SUCCESS:
                return None
            got = [reader.getData(sid, 132, 4) for sid in ids]
            return got if got == [1500, 1700, 2300, 2500] else None
        wait_until(at_goals, 10, "every servo at its goal, read by FAST_SYNC_READ")
        port.closePort()
        dev = ServoBusDevice("arm", path, "dynamixel", models.split(","), dict(zip("abcd", ids)), fast_sync_read=True)
        dev.open()                                       # nnos reads back what the SDK wrote
        try:
            wait_until(lambda: dev.flush() or (time.sleep(0.01) or dev.raw_positions()[0].tolist() == [1500, 1700, 2300, 2500]),
                       5, "nnos reading the positions the SDK set")
        finally:
            dev.close()


def test_nnos_fast_sync_read_follows_goals_and_falls_back_for_a_silent_servo():
    joints = {"shoulder_pan": 1, "shoulder_lift": 2, "elbow_flex": 3}
    models = ["xl430-w250", "xl430-w250", "xl330-m288"]
    with dynamixel_bus("--servos", "3", "--model", ",".join(models), "--silent-after", "3:1.0") as path:
        dev = ServoBusDevice("arm", path, "dynamixel", models, joints, fast_sync_read=True)
        dev.open()
        try:
            wait_until(lambda: dev.flush() or dev.poll() or dev.latest("position").count >= 5, 5, "fast readings")
            assert dev.stats()["shoulder_pan_missing"] == 0
            wait_until(lambda: dev.flush() or (time.sleep(0.01) or dev.stats()["elbow_flex_missing"] >= 5), 10,
                       "servo 3 missed")
            _, seen = dev.raw_positions()
            assert time.monotonic() - seen[0] < 0.5, "the others are still read (one SYNC_READ retry after the fast one)"
            assert "elbow_flex (servo 3" in dev.stale_detail("position")
        finally:
            dev.close()
