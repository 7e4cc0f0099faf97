"""The KVM probe's logic with stand-in guests: a guest that prints the line means yes, one that
hangs means no after the timeout, and the verdict holds for this host boot only."""
from __future__ import annotations

import os

import pytest

from nnos import kvm

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.W_OK), reason="no writable /dev/kvm here")


def test_verdict_cached_per_boot(tmp_path):
    cache = str(tmp_path / "probe")
    assert kvm.works(cache, ["sh", "-c", "echo booting; echo legacy-vm: ready; sleep 5"], b"legacy-vm: ready", 5)
    assert open(cache).read().split() == [kvm.boot_id(), "yes"]
    assert kvm.works(cache, ["false"], b"legacy-vm: ready", 1)         # cached: not run again
    with open(cache, "w") as f:
        f.write("another-boot yes\n")
    assert not kvm.works(cache, ["sh", "-c", "sleep 5"], b"legacy-vm: ready", 0.6)   # a hang, after a reboot
    assert open(cache).read().split() == [kvm.boot_id(), "no"]
