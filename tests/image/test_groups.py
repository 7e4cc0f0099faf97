"""The image tests are one pytest-xdist group (tests/image/conftest.py): run with workers
(`./build.sh test tests/image/...`), they still boot one guest at a time."""
from __future__ import annotations

import os

import pytest


def test_an_image_test_runs_in_the_image_group(request):
    """Regression: the conftest named the group after pytest-xdist's worker had read the marks
    (the conftest of a path on the command line loads before the worker's hook), so the image
    tests were spread over both workers: two TCG guests at once, each about three times slower."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and request.config.getvalue("loadgroup")):
        pytest.skip("run by pytest-xdist with --dist loadgroup (./build.sh test)")
    assert request.node.nodeid.endswith("@image"), request.node.nodeid
