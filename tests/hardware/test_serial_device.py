"""The nnos-serial device driver over a real pty with pyserial: handshake, data, refusals,
a device that vanishes, and a device that floods garbage."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from nnos_hardware.channels import ACTUATOR, SENSOR, Channel
from nnos_hardware.devices import NnosSerialDevice
from nnos_hardware.errors import HardwareError, ProtocolError, TransportError
from nnos_hardware.protocol import frames as fr
from tests.support.firmware import samples_after

EXPECTED = [Channel("cart", SENSOR, (2,), -4.8, 4.8), Channel("pole", SENSOR, (2,), -3.2, 3.2),
            Channel("force", ACTUATOR, (1,), -10, 10, safe=0.0)]


def test_handshake_stream_and_commands(device_side):
    side = device_side()
    with NnosSerialDevice("cartpole", side.port, expected=EXPECTED) as dev:
        assert dev.device_id == "test-dev-1"
        assert set(dev.channels) == {"cart", "pole", "force"}
        assert samples_after(dev, 10) >= 10
        s = dev.latest("pole")
        assert np.allclose(s.values, [0.0, 0.01])
        assert s.t_device_us > 0
        dev.write("force", [3.5])
        ref = s.t_device_us                       # the sample updates in place while we poll
        dev.flush(ref)
        deadline = time.monotonic() + 1
        while side.fw.commands == 0 and time.monotonic() < deadline:
            dev.poll(0.02)
        assert side.fw.actuators[3][0] == pytest.approx(3.5)
        assert side.fw.last_ref_us == ref
        assert dev.stats()["crc_errors"] == 0
    # closing the device sends the safe values
    deadline = time.monotonic() + 1
    while side.fw.actuators[3][0] != 0.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert side.fw.actuators[3][0] == 0.0


def test_out_of_range_commands_are_clamped_before_sending(device_side):
    side = device_side()
    with NnosSerialDevice("cartpole", side.port, expected=EXPECTED) as dev:
        dev.write("force", [55.0])
        dev.flush()
        time.sleep(0.1)
        dev.poll(0.05)
        assert side.fw.actuators[3][0] == pytest.approx(10.0)
        assert side.fw.refused == 0
        assert dev.clamped == 1


def test_device_refuses_a_bad_command_with_an_error_frame(device_side):
    side = device_side()
    with NnosSerialDevice("cartpole", side.port, expected=EXPECTED) as dev:
        dev.link.send(fr.FrameType.ACTUATE, fr.values_payload(0, [(3, np.float32([99.0]))]))   # bypass the clamp
        deadline = time.monotonic() + 1
        while dev.errors_from_device == 0 and time.monotonic() < deadline:
            dev.poll(0.05)
        assert dev.errors_from_device == 1
        assert "outside" in dev.last_error
        assert side.fw.actuators[3][0] == 0.0


def test_wrong_protocol_version_is_refused(device_side):
    side = device_side(version=2)
    with pytest.raises(ProtocolError, match="version 2, expected 1"):
        NnosSerialDevice("cartpole", side.port, expected=EXPECTED).open()


def test_unknown_channel_in_handshake_is_refused(device_side):
    from nnos_hardware.sim.cartpole import channels
    extra = [fr.ChannelInfo(9, "lidar", fr.SENSOR, (8,), 10, 0, 100)] + channels()
    side = device_side(channels=extra)
    with pytest.raises(ProtocolError, match=r"channels \['lidar'\] that the board config does not know"):
        NnosSerialDevice("cartpole", side.port, expected=EXPECTED).open()


def test_missing_or_reshaped_channel_is_refused(device_side):
    side = device_side()
    want = EXPECTED[:2] + [Channel("force", ACTUATOR, (2,), -10, 10)]
    with pytest.raises(ProtocolError, match=r"channel 'force': configured actuator \[2\], device describes actuator \[1\]"):
        NnosSerialDevice("cartpole", side.port, expected=want).open()


def test_silent_port_times_out_clearly():
    from nnos_hardware.sim.__main__ import open_pty
    master, slave, port = open_pty()
    try:
        t0 = time.monotonic()
        with pytest.raises(ProtocolError, match="no DESCRIBE .* within 0.3 s"):
            NnosSerialDevice("ghost", port, handshake_timeout=0.3).open()
        assert time.monotonic() - t0 < 1.0
    finally:
        os.close(master)
        os.close(slave)


def test_missing_port_is_a_transport_error():
    with pytest.raises(TransportError, match="cannot open serial port /dev/nonexistent-tty"):
        NnosSerialDevice("x", "/dev/nonexistent-tty").open()


def test_device_vanishing_mid_frame_raises_promptly(device_side):
    side = device_side()
    dev = NnosSerialDevice("cartpole", side.port, expected=EXPECTED)
    dev.open()
    samples_after(dev, 3)
    side.raw.append(b"\x05\x10\x01")          # half a frame ...
    time.sleep(0.05)
    side.stop()                               # ... then the device is gone (pty closed)
    t0 = time.monotonic()
    with pytest.raises(HardwareError):
        for _ in range(100):
            dev.poll(0.05)
    assert time.monotonic() - t0 < 2.0
    dev.close()


def test_garbage_flood_from_device_is_survived(device_side):
    side = device_side()
    with NnosSerialDevice("cartpole", side.port, expected=EXPECTED) as dev:
        samples_after(dev, 2)
        n0 = dev.latest("cart").count
        side.raw += [bytes(np.random.default_rng(i).integers(0, 256, 20000, dtype=np.uint8)) for i in range(10)]
        t_max = 0.0
        deadline = time.monotonic() + 5
        while dev.latest("cart").count < n0 + 50 and time.monotonic() < deadline:
            t0 = time.monotonic()
            dev.poll(0.02)
            t_max = max(t_max, time.monotonic() - t0)
        st = dev.stats()
        assert dev.latest("cart").count >= n0 + 50, st
        assert st["garbage_bytes"] > 0
        assert st["crc_errors"] + st["cobs_errors"] + st["oversize"] + st["short_frames"] > 0
        assert t_max < 0.5


def test_flush_never_blocks_when_the_device_stops_reading(device_side):
    """Regression: a device that stopped reading filled the pty and blocked the loop's write."""
    side = device_side()
    with NnosSerialDevice("cartpole", side.port, expected=EXPECTED) as dev:
        samples_after(dev, 2)
        side._stop.set()                      # the device hangs: nobody reads its end any more
        side.thread.join(2)
        worst = 0.0
        for _ in range(3000):
            t0 = time.monotonic()
            dev.flush()
            worst = max(worst, time.monotonic() - t0)
        # a write that blocks never returns while nobody reads: any bound well above a scheduling
        # hiccup tells the two apart (5 ms was crossed once by a loaded 2-core CI run: 5.2 ms)
        assert worst < 0.05, f"a flush took {worst * 1000:.1f} ms"
        assert dev.link.stats.tx_dropped > 0
