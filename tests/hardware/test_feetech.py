"""The Feetech STS protocol, the STS3215 register table as data, and the simulated servo bus —
checked against the vendor's own SDK (scservo_sdk from PyPI, unmodified) over a real pty, so
the simulator follows Feetech's protocol and not only nnos's reading of it."""
from __future__ import annotations

import time

import pytest
import numpy as np

from nnos_hardware.calibration import JointCalibration
from nnos_hardware.devices.servo_bus import ServoBusDevice
from nnos_hardware.errors import ConfigError
from nnos_hardware.protocol import feetech as ft
from nnos_hardware.registers import load
from tests.support.servo_sim import feetech_bus
from tests.support.timing import wait_until

STS = load("feetech", "sts3215")


# --- the protocol, byte for byte -----------------------------------------------------------------
def test_packets_are_the_documented_bytes():
    assert ft.ping(1) == bytes.fromhex("ffff010201fb")
    assert ft.read(1, 56, 2) == bytes.fromhex("ffff0104023802be")      # ~(1+4+2+56+2) & 0xFF
    sync = ft.sync_write(42, 2, {1: b"\x00\x08", 2: b"\xff\x0f"})
    assert sync[:7] == bytes.fromhex("fffffe0a832a02")
    assert sync[-1] == ft.checksum(sync[2:-1])
    assert ft.errors(0x21) == ["voltage", "overload"]


def test_the_parser_resynchronises_on_garbage_and_bad_checksums():
    good = ft.packet(3, 0, b"\x00\x08")
    bad = bytearray(ft.packet(4, 0, b"\x01\x02"))
    bad[-1] ^= 0xFF
    p = ft.Parser()
    stream = b"\x00\x13\xff" + bytes(bad) + good + b"\xff\xff\xff" + ft.ping(7)
    got = []
    for i in range(0, len(stream), 3):            # in pieces, as a serial port delivers them
        got += p.feed(stream[i:i + 3])
    assert [(x.servo_id, x.code, x.params) for x in got] == [(3, 0, b"\x00\x08"), (7, ft.PING, b"")]
    assert p.stats.checksum_errors == 1
    assert p.stats.garbage_bytes >= 3


def test_register_table_is_data_with_sign_and_magnitude():
    assert (STS["Goal_Position"].address, STS["Present_Position"].address, STS["Torque_Enable"].address) == (42, 56, 40)
    r = STS["Present_Position"]
    assert r.encode(-5, "little") == bytes((5, 0x80))
    assert r.decode(bytes((5, 0x80)), "little") == -5
    with pytest.raises(ConfigError, match="no register 'Goal_Posiiton'; it has .*Goal_Position"):
        STS["Goal_Posiiton"]
    with pytest.raises(ConfigError, match="no register table for feetech sts9999; tables: scs0009, sts3215"):
        load("feetech", "sts9999")


# --- the simulated bus, driven by the vendor's SDK ---------------------------------------------------
@pytest.fixture
def sdk(servo_sdk):
    return servo_sdk("scservo_sdk", 0)            # 0: little-endian words (STS)


def test_the_vendor_sdk_pings_reads_and_writes_simulated_servos(sdk):
    scs, connect = sdk
    with feetech_bus("--servos", "3") as path:
        port, ph = connect(path)
        for sid in (1, 2, 3):
            model, result, error = ph.ping(port, sid)
            assert result == scs.COMM_SUCCESS, ph.getTxRxResult(result)
            assert (model, error) == (STS.model_number, 0)
        _, result, _ = ph.ping(port, 9)                # nobody there: the SDK times out, as on a bus
        assert result == scs.COMM_RX_TIMEOUT
        pos, result, _ = ph.read2ByteTxRx(port, 2, STS["Present_Position"].address)
        assert result == scs.COMM_SUCCESS
        assert pos == 2048
        assert ph.write2ByteTxRx(port, 2, STS["Goal_Position"].address, 2300)[0] == scs.COMM_SUCCESS
        assert ph.read2ByteTxRx(port, 2, STS["Goal_Position"].address)[0] == 2300
        result, error = ph.write2ByteTxRx(port, 2, STS["Present_Position"].address, 5)
        assert result == scs.COMM_SUCCESS
        assert error & 0x40, "a read-only register refuses the write with the instruction error bit"


def test_torque_on_the_servos_follow_a_sync_write_within_their_speed(sdk):
    scs, connect = sdk
    with feetech_bus("--servos", "6") as path:
        port, ph = connect(path)
        ids = list(range(1, 7))
        for sid in ids:
            assert ph.write1ByteTxRx(port, sid, STS["Torque_Enable"].address, 1)[0] == scs.COMM_SUCCESS
        goals = {sid: 2048 + 100 * sid for sid in ids}
        writer = scs.GroupSyncWrite(port, ph, STS["Goal_Position"].address, 2)
        for sid, g in goals.items():
            assert writer.addParam(sid, [g & 0xFF, g >> 8])
        t0 = time.monotonic()
        assert writer.txPacket() == scs.COMM_SUCCESS
        reader = scs.GroupSyncRead(port, ph, STS["Present_Position"].address, 2)
        for sid in ids:
            assert reader.addParam(sid)

        def positions():
            if reader.txRxPacket() != scs.COMM_SUCCESS:
                return None
            return {sid: reader.getData(sid, STS["Present_Position"].address, 2) for sid in ids}
        first = wait_until(positions, 5, "a sync read of six servos")
        assert all(2048 <= first[s] <= goals[s] for s in ids), first
        final = wait_until(lambda: (p := positions()) and p == goals and p, 10, "every servo at its goal")
        took = time.monotonic() - t0
        assert final == goals
        assert took >= 600 / 3400 * 0.9, f"600 ticks in {took:.3f} s: faster than the servo's top speed"


def test_silent_servos_and_error_bits_reach_the_client(sdk):
    scs, connect = sdk
    with feetech_bus("--servos", "3", "--silent", "2", "--error", "3:0x20") as path:
        port, ph = connect(path)
        assert ph.ping(port, 1)[1:] == (scs.COMM_SUCCESS, 0)
        assert ph.ping(port, 2)[1] == scs.COMM_RX_TIMEOUT
        _, result, error = ph.ping(port, 3)
        assert result == scs.COMM_SUCCESS
        assert ft.errors(error) == ["overload"]


def test_an_scs_bus_is_big_endian_for_the_sdk_and_for_nnos(servo_sdk):
    """SCS servos (scservo_sdk's protocol 1) keep their words big-endian: the SDK reads and
    moves the simulated SCS0009s, and nnos's bus device follows goals on them."""
    scs, connect = servo_sdk("scservo_sdk", 1)
    table = load("feetech", "scs0009")
    with feetech_bus("--servos", "2", "--model", "scs0009") as path:
        port, ph = connect(path)
        assert ph.ping(port, 1)[:2] == (table.model_number, scs.COMM_SUCCESS)
        assert ph.read2ByteTxRx(port, 2, table["Present_Position"].address)[:2] == (512, scs.COMM_SUCCESS)
        assert ph.write1ByteTxRx(port, 2, table["Torque_Enable"].address, 1)[0] == scs.COMM_SUCCESS
        assert ph.write2ByteTxRx(port, 2, table["Goal_Position"].address, 700)[0] == scs.COMM_SUCCESS
        wait_until(lambda: ph.read2ByteTxRx(port, 2, table["Present_Position"].address)[0] == 700, 5,
                   "servo 2 at 700, read big-endian by the SDK")
        assert ph.write1ByteTxRx(port, 2, table["Torque_Enable"].address, 0)[0] == scs.COMM_SUCCESS
        port.closePort()
        joints = {"pan": 1, "tilt": 2}
        dev = ServoBusDevice("head", path, "feetech", "scs0009", joints)
        dev.open()
        try:
            dev.set_calibration({j: JointCalibration(i, 512, 1, 100, 900) for j, i in joints.items()})
            wait_until(lambda: dev.flush() or dev.poll() or dev.latest("position").count, 5, "a reading")
            time.sleep(0.05)
            dev.poll()
            ticks, _ = dev.raw_positions()
            assert ticks.tolist() == [512, 700]
            dev.arm()

            def there():
                dev.poll()
                dev.commands["goal"][:] = [0.5, -0.5]
                dev.flush()
                time.sleep(0.01)
                t, _ = dev.raw_positions()
                return t.tolist() == [512 + round(0.5 * 1024 / (2 * np.pi)), 512 - round(0.5 * 1024 / (2 * np.pi))]
            wait_until(there, 10, "both at their goals")
        finally:
            dev.close()
