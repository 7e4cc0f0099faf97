"""The legacy VM's guest (built when its sources are newer than out/legacy-vm) for the tests
that boot it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import GUEST, ROOT


@pytest.fixture(scope="module")
def guest():
    src = [os.path.join(ROOT, "services", "legacy-vm", p) for p in ("build.py", "guest")]
    newest = max(os.path.getmtime(os.path.join(d, f)) for s in src
                 for d, _, fs in (os.walk(s) if os.path.isdir(s) else [(os.path.dirname(s), 0, [os.path.basename(s)])])
                 for f in fs)
    out = os.path.join(GUEST, "initrd.img")
    if not os.path.exists(out) or os.path.getmtime(out) < newest:
        subprocess.run([sys.executable, os.path.join(ROOT, "services", "legacy-vm", "build.py")], check=True)
    return os.path.join(GUEST, "vmlinuz"), out


@pytest.fixture
def vm_namespace():
    """Where the VM may make its network namespace (root): none before, none left after, and
    the host's forwarding setting as it was."""
    from nnos.legacy import netns
    if netns.unavailable():
        yield None
        return
    from tests.support.netfix import VmNet
    net = VmNet()
    yield net
    net.close()
