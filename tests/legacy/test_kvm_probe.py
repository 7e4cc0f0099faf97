"""The KVM probe's logic with stand-in guests: a guest that prints the line means yes, one that
hangs (prints nothing for the quiet time) or never gets there means no, a slow one that keeps
printing is waited for, and the verdict holds for this host boot only."""
from __future__ import annotations

import os
import re

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
    assert not kvm.works(cache, ["sh", "-c", "sleep 5"], b"legacy-vm: ready", 0.6, first_s=0.6)   # a hang, after a reboot
    assert open(cache).read().split() == [kvm.boot_id(), "no"]


def test_a_slow_guest_that_keeps_printing_passes_a_silent_or_endless_one_does_not(tmp_path):
    said = []
    slow = "for i in $(seq 12); do echo line $i; sleep 0.3; done; echo legacy-vm: ready; sleep 5"
    assert kvm.works(str(tmp_path / "slow"), ["sh", "-c", slow], b"legacy-vm: ready", 2.0, 30,
                     said.append)                                      # 3.6 s > quiet 2 s
    # 12 lines, then "ready"
    assert re.fullmatch(r"ready after [\d.]+ s \(its first output after [\d.]+ s, 13 lines\)", said[-1]), said
    silent = "sleep 1.5; echo legacy-vm: ready; sleep 5"                  # its first line after 1.5 s > quiet 1 s
    assert kvm.works(str(tmp_path / "late"), ["sh", "-c", silent], b"legacy-vm: ready", 1.0, 30, first_s=5.0)
    assert not kvm.works(str(tmp_path / "mute"), ["sh", "-c", "sleep 8"], b"legacy-vm: ready", 1.0, 30, said.append,
                         first_s=2.0)
    assert said[-1] == "printed nothing in 2 s", said
    stops = "echo line; echo line; sleep 8; echo legacy-vm: ready"
    assert not kvm.works(str(tmp_path / "stops"), ["sh", "-c", stops], b"legacy-vm: ready", 2.0, 30, said.append)
    assert said[-1].startswith("silent for 2 s after 2 lines") and said[-1].endswith("its last line: line"), said
    endless = "while true; do echo line; sleep 0.1; done"
    assert not kvm.works(str(tmp_path / "endless"), ["sh", "-c", endless], b"legacy-vm: ready", 1.0, 2.0, said.append)
    assert said[-1].startswith("not ready after 2 s"), said
    crashed = "echo 'qemu: kvm_buf_set_msrs: Assertion failed' >&2; exit 134"     # qemu's abort on this host
    assert not kvm.works(str(tmp_path / "crashed"), ["sh", "-c", crashed], b"legacy-vm: ready", 1.0, 10, said.append)
    assert said[-1].startswith("exited (134)") and "Assertion failed" in said[-1], said
    printed_and_left = "echo legacy-vm: ready"
    assert kvm.works(str(tmp_path / "left"), ["sh", "-c", printed_and_left], b"legacy-vm: ready", 1.0, 10)
    assert not kvm.works(str(tmp_path / "none"), ["/nonexistent/qemu"], b"legacy-vm: ready", 1.0, 10, said.append)
    assert said[-1].startswith("could not run /nonexistent/qemu"), said


def _sys(root, vendor: str | None, clocks: str) -> str:
    dmi = root / "devices/virtual/dmi/id"
    src = root / "devices/system/clocksource/clocksource0"
    src.mkdir(parents=True)
    (src / "available_clocksource").write_text(clocks + " \n")
    if vendor is not None:
        dmi.mkdir(parents=True)
        (dmi / "sys_vendor").write_text(vendor + "\n")
    return str(root)


def test_a_machine_emulated_without_kvm_is_told_and_not_probed(tmp_path, monkeypatch):
    tcg = _sys(tmp_path / "tcg", "QEMU", "tsc hpet acpi_pm")
    assert kvm.emulated(tcg) == "this machine is emulated by QEMU without KVM (clock sources: tsc hpet acpi_pm)"
    assert kvm.emulated(_sys(tmp_path / "kvm", "QEMU", "kvm-clock tsc hpet acpi_pm")) == ""   # a KVM guest
    assert kvm.emulated(_sys(tmp_path / "board", "Raspberry Pi", "arch_sys_counter")) == ""
    assert kvm.emulated(_sys(tmp_path / "nodmi", None, "tsc kvm-clock")) == ""                # this CI host
    told = kvm.emulated(tcg)
    monkeypatch.setattr(kvm, "emulated", lambda: told)
    said, cache = [], str(tmp_path / "probe")
    assert not kvm.works(cache, ["sh", "-c", "echo legacy-vm: ready"], b"legacy-vm: ready", 1.0, 10, said.append)
    assert said == [f"not tried: {told}; nested KVM under emulation is not to be trusted"], said
    assert not os.path.exists(cache)                  # nothing run, nothing cached
