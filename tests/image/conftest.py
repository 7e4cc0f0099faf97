"""The real image booted in qemu: built once per session (rebuilt when its inputs changed), each
test on its own sparse copy of the disk, grown to 1 GiB like a card larger than the image."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.image import ARCH, BOARD, OUT, ROOT, Device, artifacts, boot_times_path, inputs_digest

TOOLS = ("qemu-system-x86_64", "mmdebstrap", "mksquashfs", "sfdisk", "debugfs", "mcopy")


@pytest.hookimpl(tryfirst=True)       # before pytest-xdist's worker adds the group to each node id
def pytest_collection_modifyitems(items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.xdist_group("image"))     # one qemu at a time on 2 cores


@pytest.fixture(scope="session")
def image():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"the image build and boot need root and {', '.join(missing) or 'the build tools'} "
                    "(./build.sh boot installs them)")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, ".image.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        want = inputs_digest(ARCH, BOARD, None)
        try:
            with open(os.path.join(OUT, f"nnos-{ARCH}.inputs")) as f:
                have = f.read().strip()
        except FileNotFoundError:
            have = None
        if have != want:
            subprocess.run([sys.executable, os.path.join(ROOT, "image", "build.py"), "--arch", ARCH, "--board", BOARD],
                           check=True)
    return artifacts(ARCH)


STARTED = time.time()


def pytest_terminal_summary(terminalreporter):
    """The boot times the boot test recorded in this run (never asserted)."""
    try:
        if os.path.getmtime(boot_times_path()) < STARTED:
            return
        with open(boot_times_path()) as f:
            times = json.load(f)
    except (OSError, ValueError):
        return
    for which, phases in times.items():
        terminalreporter.write_line(f"boot times, {which} (s): " + ", ".join(f"{k} {v}" for k, v in phases.items()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test on a booted image shows the guest's console tail: in CI it is the only
    record of what the device was doing."""
    outcome = yield
    report = outcome.get_result()
    dev = next((v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Device)), None)
    if report.failed and dev is not None:
        report.sections.append(("guest console (last 6000 characters)", dev.vm.console()[-6000:]))


@pytest.fixture
def device(image, tmp_path):
    d = Device(image, str(tmp_path))
    yield d
    d.close()
