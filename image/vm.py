"""Run an nnos disk image in qemu: the boot test's and the boot benchmark's machine, and a way to
try the image on a laptop (`./build.sh vm`).

The guest gets the image as a virtio disk, user-mode networking restricted to the host's
forwarded control-plane port (127.0.0.1 only; the guest reaches nothing else), an xhci USB
controller for hot-added USB serial adapters, an i6300esb watchdog, the console in a file and
a QMP socket. KVM is used when a probe boots with it; otherwise TCG.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(REPO, "out")
QEMU = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}
SERVED_ADDRESS = "10.0.2.100"                      # where a guest fetches the ``served`` folder's files
MACHINE = {"amd64": ["-machine", "q35"], "arm64": ["-machine", "virt", "-cpu", "cortex-a72"]}
FIRMWARE = {"amd64": "/usr/share/OVMF/OVMF_CODE.fd", "arm64": "/usr/share/AAVMF/AAVMF_CODE.fd"}
STAMP = re.compile(r"\[nnos\s+(\d+\.\d+)s\] (.*)")
sys.path.insert(0, REPO)

from nnos import kvm  # noqa: E402


class VmError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifacts(arch: str, out: str = OUT) -> dict:
    base = os.path.join(out, f"nnos-{arch}")
    paths = {k: f"{base}.{k}" for k in ("img", "vmlinuz", "initrd.img", "cmdline")}
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
        raise VmError(f"no built image: {', '.join(missing)} missing (./build.sh image --arch {arch})")
    return paths


def kvm_works(arch: str) -> bool:
    """Boot the image's kernel with KVM to the initramfs (cached per host boot). /dev/kvm can
    exist and still hang guests, as it does on some CI machines."""
    if arch != {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine):
        return False
    a = artifacts(arch)
    cmd = [QEMU[arch], *MACHINE[arch], "-accel", "kvm", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
           "-serial", "stdio", "-kernel", a["vmlinuz"], "-initrd", a["initrd.img"],
           "-append", "console=ttyS0 panic=-1 nnos.root=none"]
    return kvm.works(os.path.join(OUT, "cache", f"kvm-probe-{arch}"), cmd, b"initramfs: started", first_s=20.0)


class Qmp:
    """QEMU Machine Protocol over a Unix socket: JSON commands, answers and events."""

    def __init__(self, path: str, timeout: float = 10.0):
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise VmError(f"no QMP socket at {path}")
                time.sleep(0.05)
        self.timeout = timeout
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rwb")
        self.events: list[dict] = []
        self._read()                                       # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        line = self.file.readline()
        if not line:
            raise VmError("QMP connection closed")
        return json.loads(line)

    def execute(self, command: str, **arguments) -> dict:
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise VmError(f"QMP {command}: {r['error'].get('desc', r['error'])}")
            return r.get("return", {})

    def wait_event(self, name: str, timeout: float = 10.0, **data) -> dict:
        """The next event ``name`` whose data includes ``data`` (already received ones first)."""
        end = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and all(ev.get("data", {}).get(k) == v for k, v in data.items()):
                    return self.events.pop(i)
            left = end - time.monotonic()
            if left <= 0:
                raise VmError(f"no QMP event {name} {data or ''} within {timeout:.0f} s")
            self.sock.settimeout(left)
            try:
                msg = self._read()
            except (socket.timeout, TimeoutError):
                continue
            finally:
                self.sock.settimeout(self.timeout)
            if "event" in msg:
                self.events.append(msg)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Vm:
    def __init__(self, image: str, arch: str = "amd64", workdir: str | None = None, uefi: bool = False,
                 memory_mb: int = 1024, cpus: int = 2, api_port: int | None = None, accel: str | None = None,
                 cmdline_extra: str = "", built: dict | None = None, served: str | None = None,
                 api_host: str = "127.0.0.1", lan: bool = False):
        """``built``: the image's kernel, initrd and command line (artifacts(); another build's
        for an image built elsewhere, such as --suite trixie's). ``served``: a folder whose
        files the guest can fetch at http://10.0.2.100/NAME (each connection answered by
        image/lib/http_once.py through qemu's guestfwd: no host port); each answer is a line
        of ``served_log`` (what the guest downloaded). ``api_host``: the host address the
        control plane is forwarded from (a fleet's device: its network namespace's). ``lan``: the
        guest's packets may leave the virtual network for the host's (the namespace's LAN: a
        client there is answered at its own address, which qemu's restrict=on would drop)."""
        self.arch, self.image, self.uefi, self.built = arch, image, uefi, built
        self.workdir = workdir or os.path.join(OUT, f"vm-{arch}-{os.getpid()}")
        os.makedirs(self.workdir, exist_ok=True)
        self.console_path = os.path.join(self.workdir, "console.log")
        self.qmp_path = os.path.join(self.workdir, "qmp.sock")
        self.memory_mb, self.cpus, self.cmdline_extra, self.served = memory_mb, cpus, cmdline_extra, served
        self.served_log = os.path.join(self.workdir, "served.log")
        self.api_port, self.api_host, self.lan = api_port or free_port(), api_host, lan
        self.accel = accel or ("kvm" if kvm_works(arch) else "tcg")
        self.proc: subprocess.Popen | None = None
        self.qmp: Qmp | None = None
        self.usb: dict[str, str] = {}                 # hot-added USB device id -> its chardev
        self.chardevs = 0

    # --- the command line ----------------------------------------------------------------------
    def command(self) -> list[str]:
        a = self.arch
        # numpy's wheels need x86-64-v2 at least (SSE4.2, POPCNT): qemu's default qemu64 CPU
        # lacks them, so TCG gets "max" (all it emulates, AVX2 included) and KVM the host's
        cpu = (["-cpu", "host" if self.accel == "kvm" else "max"] if a == "amd64" else [])
        net = f"user,id=n0,restrict={'off' if self.lan else 'on'},hostfwd=tcp:{self.api_host}:{self.api_port}-:8080"
        cmd = [QEMU[a], *MACHINE[a], *cpu, "-accel", self.accel, "-m", str(self.memory_mb), "-smp", str(self.cpus),
               "-nodefaults", "-display", "none", "-monitor", "none",
               "-chardev", f"file,id=con,path={self.console_path}", "-serial", "chardev:con",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
               "-drive", f"file={self.image},format=raw,if=virtio,cache=writeback,discard=unmap",
               "-netdev", net + self._guestfwd(),
               "-device", "virtio-net-pci,netdev=n0", "-device", "qemu-xhci,id=xhci",
               "-device", "virtio-rng-pci"]
        if a == "amd64":
            cmd += ["-device", "i6300esb", "-action", "watchdog=reset"]
        if self.uefi:
            vars_path = os.path.join(self.workdir, "efivars.fd")
            if not os.path.exists(vars_path):
                shutil.copy(FIRMWARE[a].replace("CODE", "VARS"), vars_path)
            cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={FIRMWARE[a]}",
                    "-drive", f"if=pflash,format=raw,file={vars_path}"]
        else:
            art = self.built or artifacts(a)
            with open(art["cmdline"]) as f:
                cmdline = f.read().strip() + (" " + self.cmdline_extra if self.cmdline_extra else "")
            cmd += ["-kernel", art["vmlinuz"], "-initrd", art["initrd.img"], "-append", cmdline]
        return cmd

    def _guestfwd(self) -> str:
        if not self.served:
            return ""
        for path in (self.served, self.served_log):
            if "," in path or " " in path:
                raise VmError(f"a served folder's path and the VM's work folder may hold no comma or space: {path!r}")
        return (f",guestfwd=tcp:{SERVED_ADDRESS}:80-cmd:{sys.executable} {HERE}/lib/http_once.py "
                f"{self.served} {self.served_log}")

    # --- life cycle ----------------------------------------------------------------------------
    def start(self) -> "Vm":
        if self.proc is not None and self.proc.poll() is None:
            raise VmError("already running")
        for p in (self.console_path, self.qmp_path):
            if os.path.exists(p):
                os.unlink(p)
        if self.uefi and self.cmdline_extra:            # GRUB appends NNOS_EXTRA to the kernel's arguments
            sys.path.insert(0, HERE)
            import bootenv
            if bootenv.read(self.image).get("NNOS_EXTRA") != self.cmdline_extra:
                bootenv.write(self.image, NNOS_EXTRA=self.cmdline_extra)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.workdir, "qemu.stderr"), "wb"))
        self.qmp = Qmp(self.qmp_path)
        return self

    def console(self) -> str:
        try:
            with open(self.console_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def timeline(self, boot: int = -1) -> list[tuple[float, str]]:
        """(seconds since the kernel started, event) of one boot (default: the latest)."""
        boots: list[list] = []
        for m in STAMP.finditer(self.console()):
            t, ev = float(m.group(1)), m.group(2).strip()
            if ev.startswith("initramfs: started") or not boots:
                boots.append([])
            boots[-1].append((t, ev))
        return boots[boot] if boots else []

    def wait_for(self, pattern: str, timeout: float = 120.0, after: int = 0) -> re.Match:
        """Wait until the console (from byte offset ``after``) matches ``pattern``."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            text = self.console()[after:]
            m = rx.search(text)
            if m:
                return m
            if self.proc is None or self.proc.poll() is not None:
                raise VmError(f"qemu exited ({self.proc.returncode if self.proc else '-'}) before {pattern!r}; "
                              f"console tail:\n{text[-3000:]}\nqemu: {self._stderr()}")
            if time.monotonic() > end:
                raise VmError(f"no {pattern!r} on the console after {timeout:.0f} s; tail:\n{text[-3000:]}")
            time.sleep(0.1)

    def _stderr(self) -> str:
        try:
            with open(os.path.join(self.workdir, "qemu.stderr")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Power cut: SIGKILL to qemu, nothing flushed by the guest."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.qmp:
            self.qmp.close()
            self.qmp = None

    def stop(self, timeout: float = 5.0) -> None:
        if self.qmp and self.proc and self.proc.poll() is None:
            try:
                self.qmp.execute("quit")
                self.proc.wait(timeout)
            except (VmError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- devices -------------------------------------------------------------------------------
    def add_usb_serial(self, dev_id: str, tty: str, serial: str) -> None:
        """Hot-add a USB serial adapter (an FTDI FT232, 0403:6001, as qemu emulates it) whose
        other end is the host tty ``tty`` (e.g. the simulator's pseudo-terminal)."""
        self.chardevs += 1
        chardev = f"chr-{dev_id}-{self.chardevs}"
        self.qmp.execute("chardev-add", id=chardev, backend={"type": "serial", "data": {"device": tty}})
        self.qmp.execute("device_add", driver="usb-serial", id=dev_id, chardev=chardev, serial=serial, bus="xhci.0")
        self.usb[dev_id] = chardev

    def remove_usb(self, dev_id: str, timeout: float = 10.0) -> None:
        """Unplug it (device_del) and wait until qemu has removed it; then drop its chardev."""
        self.qmp.execute("device_del", id=dev_id)
        self.qmp.wait_event("DEVICE_DELETED", timeout, device=dev_id)
        chardev = self.usb.pop(dev_id, None)
        if chardev:
            self.qmp.execute("chardev-remove", id=chardev)


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="build.sh vm", description="Boot the built image in qemu; console on stdout.")
    ap.add_argument("--arch", default="amd64", choices=sorted(QEMU))
    ap.add_argument("--uefi", action="store_true", help="boot through the EFI firmware and GRUB, not -kernel")
    ap.add_argument("--port", type=int, default=8080, help="host port for the control plane")
    ap.add_argument("--host", default="127.0.0.1", help="host address for the control plane (default 127.0.0.1)")
    ap.add_argument("--disk", help="the disk to run (default: a copy of out/nnos-ARCH.img in out/)")
    ap.add_argument("--workdir", help="for the console log, QMP socket and EFI variables (default: out/)")
    ap.add_argument("--extra", default="", help="kernel command line additions (nnos.loop_watchdog_s=5 …)")
    ap.add_argument("--lan", action="store_true", help="the guest reaches the host's networks (a fleet's device in its "
                    "namespace: clients off 127.0.0.1 are answered)")
    a = ap.parse_args(argv)
    src = artifacts(a.arch)["img"]
    disk = a.disk or os.path.join(OUT, f"vm-{a.arch}.img")
    if not a.disk and not os.path.exists(disk):
        subprocess.run(["cp", "--sparse=always", src, disk], check=True)
        os.truncate(disk, max(os.path.getsize(disk), 2 << 30))
    vm = Vm(disk, a.arch, workdir=a.workdir, uefi=a.uefi, api_port=a.port, api_host=a.host, cmdline_extra=a.extra,
            lan=a.lan)
    print(f"qemu ({vm.accel}): disk {disk}; control plane on http://{a.host}:{a.port}/", file=sys.stderr)
    vm.start()
    pos = 0
    try:
        while vm.proc.poll() is None:
            text = vm.console()
            sys.stdout.write(text[pos:])
            sys.stdout.flush()
            pos = len(text)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        vm.stop()
    return 0


def _stop_on_term() -> None:
    """SIGTERM (a fleet stopping its devices) ends the VM as Ctrl-C does."""
    import signal

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, raise_interrupt)


if __name__ == "__main__":
    _stop_on_term()
    sys.exit(main())
