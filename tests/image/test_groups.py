"""The image tests are one pytest-xdist group (tests/image/conftest.py): run with workers
(`./build.sh test tests/image/...`), they still boot one guest at a time."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support.paths import ROOT


def test_an_image_test_runs_in_the_image_group(request):
    """Regression: the conftest named the group after pytest-xdist's worker had read the marks
    (the conftest of a path on the command line loads before the worker's hook), so the image
    tests were spread over both workers: two TCG guests at once, each test 1.3–3.8× as long.
    Outside such a run (the qemu phase runs its tests one at a time) it runs itself under one."""
    if os.environ.get("PYTEST_XDIST_WORKER") and request.config.getvalue("loadgroup"):
        assert request.node.nodeid.endswith("@image"), request.node.nodeid
        return
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider",
                        os.path.relpath(__file__, ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
