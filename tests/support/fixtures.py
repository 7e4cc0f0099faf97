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
def beside(tmp_path):
    """make(env=None) → (api, live): a real control plane beside a loop that ticks in this
    process, its rings in the same data directory."""
    from tests.support.api import Api
    from tests.support.live import Live
    made = []

    def make(env=None):
        api = Api(tmp_path / "d", env=env)
        live = Live(tmp_path, data=tmp_path / "d")
        stop, t = live.ticking()
        made.append((api, live, stop, t))
        return api, live
    yield make
    for api, live, stop, t in made:
        stop.set()
        t.join()
        live.close()
        api.stop()


@pytest.fixture
def up(tmp_path):
    u = Up(tmp_path / "data")
    yield u
    u.stop()


def pytest_configure(config):
    """The controller names one retry report for itself and every worker it starts."""
    import os
    import tempfile
    if not hasattr(config, "workerinput"):
        fd, path = tempfile.mkstemp(prefix="nnos-test-retries-", suffix=".jsonl")
        os.close(fd)
        os.environ["NNOS_TEST_RETRY_LOG"] = path


def pytest_terminal_summary(terminalreporter):
    from tests.support.timing import factor, read_retries
    rows = read_retries()
    tr = terminalreporter
    tr.write_sep("-", f"host stalls: {len(rows)} retried window(s); machine factor now {factor():.1f}")
    for r in rows:
        tr.write_line(f"retried {r['test']}: {r['why']}")


@pytest.fixture(params=["native", "x86-64-v3", "x86-64-v2"])
def cpu_target(request, monkeypatch):
    """Each CPU target the cpu backend can compile for that this machine runs (native, AVX2
    code, the generic loops), as NNOS_CPU_TARGET; the others skipped."""
    import platform

    from nnos.backends.cpu.toolchain import TARGETS, cpu_features
    name = request.param
    if name != "native" and (TARGETS[name][0] != platform.machine() or TARGETS[name][2] - cpu_features()):
        pytest.skip(f"this CPU cannot run {name}")
    monkeypatch.setenv("NNOS_CPU_TARGET", name)
    return name


@pytest.fixture
def cpu_cache(tmp_path_factory, monkeypatch):
    """The cpu backend's object cache in this session's temporary directory, not the user's
    (``pytestmark = pytest.mark.usefixtures("cpu_cache")``)."""
    monkeypatch.setenv("NNOS_CPU_CACHE", str(tmp_path_factory.getbasetemp() / "cpu-cache"))
