"""Hardware tests talk real serial I/O: pseudo-terminals opened with pyserial on the host side
and a protocol-v1 firmware (hardware/sim/firmware.py) on the device side, in a thread
(tests/support/firmware.py)."""
from __future__ import annotations

import pytest

from tests.support.firmware import FirmwareThread


@pytest.fixture
def device_side():
    made = []

    def make(**kw):
        made.append(FirmwareThread(**kw))
        return made[-1]
    yield make
    for f in made:
        f.stop()


@pytest.fixture
def servo_sdk(monkeypatch):
    """A vendor's own SDK as a client of a simulated bus: ``servo_sdk("scservo_sdk", 0)`` or
    ``servo_sdk("dynamixel_sdk", 2.0)`` gives (the module, connect(path) → (port, packet handler));
    ports are closed afterwards. The SDK waits 2 × its 16 ms USB latency timer + 2 ms for a
    reply; a busy host gets more."""
    from tests.support.timing import factor
    opened = []

    def make(module: str, protocol):
        sdk = pytest.importorskip(module)
        monkeypatch.setattr(sdk.port_handler, "LATENCY_TIMER", 16 * max(1.0, factor()) * 2)

        def connect(path):
            port = sdk.PortHandler(path)
            assert port.openPort()
            assert port.setBaudRate(1_000_000)
            opened.append(port)
            return port, sdk.PacketHandler(protocol)
        return sdk, connect
    yield make
    for port in opened:
        port.closePort()
