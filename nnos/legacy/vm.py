"""The legacy VM's qemu command line: the cloud kernel and the agents' initramfs, no disk, no
shared filesystem, no network interface, and one virtio-serial port to the broker's socket.
(Its optional outside network — a namespace of its own with NAT, the host unreachable — is
the next part of issue 7.)

    python -m nnos.legacy.vm --kernel K --initrd I --socket S [--agents a,b] [--console FILE]
"""
from __future__ import annotations

import argparse
import os
import sys

PORT_NAME = "org.nnos.broker"


def command(kernel: str, initrd: str, socket_path: str, agents: tuple[str, ...] = ("telemetry", "update"),
            memory_mb: int = 128, accel: str = "tcg", console: str | None = None,
            settings: dict | None = None, qemu: str = "qemu-system-x86_64") -> list[str]:
    append = ["console=ttyS0", "quiet", "panic=-1", f"nnos.agents={','.join(agents)}", "nnos.net=off"]
    for k, v in (settings or {}).items():              # nnos.telemetry_url=..., nnos.interval=...
        if any(c.isspace() for c in str(v)):
            raise ValueError(f"legacy VM setting {k}={v!r}: no spaces allowed")
        append.append(f"nnos.{k}={v}")
    cmd = [qemu, "-accel", accel, *(["-cpu", "max"] if accel == "tcg" else []), "-m", str(memory_mb), "-smp", "1",
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-kernel", kernel, "-initrd", initrd, "-append", " ".join(append),
           "-device", "virtio-serial-pci", "-device", f"virtserialport,chardev=broker,name={PORT_NAME}",
           "-chardev", f"socket,id=broker,path={socket_path},server=on,wait=off",
           "-device", "virtio-rng-pci"]
    cmd += ["-chardev", f"file,id=con,path={console}", "-serial", "chardev:con"] if console else ["-serial", "null"]
    cmd += ["-nic", "none"]
    return cmd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnos.legacy.vm")
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--agents", default="telemetry,update")
    ap.add_argument("--console")
    a = ap.parse_args(argv)
    cmd = command(a.kernel, a.initrd, a.socket, tuple(x for x in a.agents.split(",") if x), console=a.console)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
