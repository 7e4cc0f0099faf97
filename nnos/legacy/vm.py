"""The legacy VM's qemu command line: the guest kernel and the agents' initramfs, no disk, no
shared filesystem, one virtio-serial port to the broker's socket, and — only inside its own
network namespace (netns.py) — one NIC with qemu's user networking. Without the namespace
(not root, no nftables) it has no NIC at all.

    python -m nnos.legacy.vm --kernel K --initrd I --socket S --data DATA [--console FILE]

The settings (agents, URLs, network on/off, memory) come from DATA/legacy-vm.json (settings.py).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile

from .. import kvm
from . import netns
from . import settings as vm_settings

PORT_NAME = "org.nnos.broker"
MACHINES = {"x86_64": ("qemu-system-x86_64", ["-machine", "pc"], "ttyS0"),
            "aarch64": ("qemu-system-aarch64", ["-machine", "virt"], "ttyAMA0")}
# What the guest's kernel need not do at boot: the crypto self-tests (0.29 s of its initcalls
# under TCG) and, on a PC, ACPI (its interpreter and the PCI interrupt links, 0.5 s; the guest
# has one CPU and nothing to power-manage, and is stopped by ending qemu). Without ACPI's MSI
# set-up the virtio devices use INTx: pci=nomsi says so rather than warn. Measured under TCG on
# the host: the guest's kernel up 2.9-4.5 s -> 2.0-2.1 s (benchmarks/RESULTS.md, the legacy
# VM's boot inside the image).
KERNEL_ARGS = {"x86_64": ["cryptomgr.notests", "acpi=off", "pci=nomsi"], "aarch64": ["cryptomgr.notests"]}


def command(kernel: str, initrd: str, socket_path: str, agents: tuple[str, ...] = ("telemetry", "update"),
            memory_mb: int = 128, accel: str = "tcg", console: str | None = None,
            settings: dict | None = None, network: bool = False, arch: str | None = None) -> list[str]:
    """``network``: give it a NIC (run inside the namespace: prefix netns.exec_prefix())."""
    arch = arch or platform.machine()
    qemu, machine, tty = MACHINES[arch]
    append = [f"console={tty}", "quiet", "panic=-1", *KERNEL_ARGS[arch], f"nnos.agents={','.join(agents)}",
              f"nnos.net={'on' if network else 'off'}"]
    for k, v in (settings or {}).items():              # nnos.telemetry_url=..., nnos.interval=...
        if any(c.isspace() for c in str(v)):
            raise ValueError(f"legacy VM setting {k}={v!r}: no spaces allowed")
        append.append(f"nnos.{k}={v}")
    cpu = ["-cpu", "max"] if accel == "tcg" else ["-cpu", "host"]
    cmd = [qemu, *machine, "-accel", accel, *cpu, "-m", str(memory_mb), "-smp", "1",
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-kernel", kernel, "-initrd", initrd, "-append", " ".join(append),
           "-device", "virtio-serial-pci", "-device", f"virtserialport,chardev=broker,name={PORT_NAME}",
           "-chardev", f"socket,id=broker,path={socket_path},server=on,wait=off",
           "-device", "virtio-rng-pci"]
    cmd += ["-chardev", f"file,id=con,path={console}", "-serial", "chardev:con"] if console else ["-serial", "null"]
    if network:          # user networking inside the namespace; no boot ROM (it boots from -kernel)
        cmd += ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile="]
    else:
        cmd += ["-nic", "none"]
    return cmd


def kvm_works(kernel: str, initrd: str, report=None) -> bool:
    """Boot the guest with KVM to its "ready" line, once per host boot (cached in /run, or the
    temp directory): /dev/kvm can exist and still hang guests, as on some CI machines. Its
    kernel is not quiet: the probe tells a slow guest from a hung one by its console."""
    cache = os.path.join("/run" if os.access("/run", os.W_OK) else tempfile.gettempdir(), "nnos-legacy-kvm")
    sock = os.path.join(tempfile.gettempdir(), f"nnos-kvm-probe-{os.getpid()}.sock")
    cmd = command(kernel, initrd, sock, (), accel="kvm")
    cmd[cmd.index("-serial") + 1] = "stdio"
    append = cmd.index("-append") + 1
    cmd[append] = " ".join(w for w in cmd[append].split() if w != "quiet")
    try:
        return kvm.works(cache, cmd, b"legacy-vm: ready", report=report)
    finally:
        if os.path.exists(sock):
            os.unlink(sock)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnos.legacy.vm")
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--console")
    a = ap.parse_args(argv)
    say = lambda m: print(f"legacy-vm: {m}", file=sys.stderr, flush=True)   # noqa: E731
    s = vm_settings.load(a.data, say)
    why = netns.unavailable()
    prefix = []
    if why:
        say(f"no network: {why}")
    else:
        try:
            netns.setup(uplink=s["network"])
            prefix = netns.exec_prefix()
            say(f"network namespace {netns.NS}, outside network {'on' if s['network'] else 'off'}")
        except netns.NetworkError as e:
            say(f"no network: {e}")
    accel = "kvm" if kvm_works(a.kernel, a.initrd, lambda how: say(f"KVM probe: {how}")) else "tcg"
    say(f"accelerator {accel}")
    cmd = prefix + command(a.kernel, a.initrd, a.socket, tuple(s["agents"]), memory_mb=s["memory_mb"], accel=accel,
                           console=a.console, settings=vm_settings.kernel_settings(s), network=bool(prefix))
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
