"""The control plane as it runs: a real uvicorn on 127.0.0.1 in its own process."""
from __future__ import annotations

import pytest

from tests.support.api import Api


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    a = Api(tmp_path_factory.mktemp("api"))
    yield a
    a.stop()
