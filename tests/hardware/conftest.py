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
