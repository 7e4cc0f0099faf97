"""Fixtures every test directory may use (registered in tests/conftest.py)."""
from __future__ import annotations

import pytest

from tests.support.up import Up, free_port, running


@pytest.fixture
def up_with_api(tmp_path):
    """`nnos up` with its control plane on a free port, running and answering: (up, url)."""
    u = Up(tmp_path / "data", api_port=free_port())
    try:
        u.wait_for(running)
        yield u, u.wait_for_api()
    finally:
        u.stop()


@pytest.fixture
def up(tmp_path):
    u = Up(tmp_path / "data")
    yield u
    u.stop()
