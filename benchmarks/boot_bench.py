"""Boot timeline of the built image in qemu, median of N fresh first boots, N second boots and
N boots of the reference: qemu start → kernel → initramfs → init → first tick → control plane
ready → HTTP answered, plus the image's size and build time (from its manifest).

    python benchmarks/boot_bench.py [--arch amd64|arm64] [--runs 3] [--uefi] [--timeline] [--cpu]

The reference is measured in the same run on the same image: its root filesystem with PID 1
one Python that imports numpy and ticks (image/overlay/usr/lib/nnos/reference-init, booted with
nnos.init=/usr/lib/nnos/reference-init) — what a first tick costs at the least there.
Targets under TCG (issue 21): init → first tick ≤ 3 s and qemu start → first tick ≤ 8 s on
second boots; the first tick before the API is ready; image ≤ 400 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from image.datafs import DataFs  # noqa: E402
from image.vm import OUT, Vm, artifacts, kvm_works  # noqa: E402

TIMELINE = False
CPU = False
REFERENCE = "nnos.init=/usr/lib/nnos/reference-init"
EVENTS = {"initramfs": "initramfs: started", "init": "init: started", "supervisor": "supervisor: started",
          "first_tick": "loop: first tick", "api_ready": "control plane: ready"}


def one_boot(vm: Vm, api: bool, mark: int = 0, timeout: float = 600, reference: bool = False) -> dict:
    """Host clock of each console event as it appears, and the guest's own stamps."""
    host = {}
    t_start = time.monotonic()
    end = t_start + timeout
    skip = ("api_ready", "supervisor") if reference else () if api else ("api_ready",)
    want = {k: v for k, v in EVENTS.items() if k not in skip}
    if reference:                   # its own stamp: an nnos boot in its place fails here, not in the figures
        want["first_tick"] = "loop: first tick (reference)"
    elif api and CPU:               # nnos.bootcpu: its report's last line
        want["cpu"] = "boot cpu: first tick"
    api = api and not reference
    while time.monotonic() < end and len(host) < len(want) + api:
        text = vm.console()[mark:]
        for k, v in want.items():
            if k not in host and v in text:
                host[k] = time.monotonic()
        if api and "http" not in host and "api_ready" in host:
            try:
                if httpx.get(f"http://127.0.0.1:{vm.api_port}/v2/health/live", timeout=0.5).status_code == 200:
                    host["http"] = time.monotonic()
            except httpx.HTTPError:
                pass
        if vm.proc.poll() is not None:
            raise RuntimeError(f"qemu exited; console:\n{vm.console()[-3000:]}")
        time.sleep(0.05)
    guest = {}
    for t, ev in vm.timeline():
        for k, v in want.items():
            if ev.startswith(v) and k not in guest:
                guest[k] = t
    missing = [k for k in want if k not in guest]
    if missing:
        raise RuntimeError(f"no {missing} on the console:\n{vm.console()[-3000:]}")
    return {"host": host, "guest": guest, "events": vm.timeline()}


def phases(b: dict, started: float) -> dict:
    if TIMELINE:
        print("\n".join(f"  {t:7.2f}  {ev}" for t, ev in b["events"]), file=sys.stderr)
    elif CPU:
        print("\n".join(f"  {ev}" for _, ev in b["events"] if ev.startswith("boot cpu: ")), file=sys.stderr)
    g = b["guest"]
    kernel_host = b["host"]["initramfs"] - g["initramfs"]     # host clock when the kernel began
    out = {"qemu→kernel": kernel_host - started, "kernel→initramfs": g["initramfs"],
           "initramfs→init": g["init"] - g["initramfs"], "kernel→init": g["init"],
           "init→first tick": g["first_tick"] - g["init"],
           "qemu start→first tick": kernel_host - started + g["first_tick"]}
    if "api_ready" in g:
        out["first tick→API ready"] = g["api_ready"] - g["first_tick"]
        out["qemu start→HTTP answered"] = b["host"].get("http", float("nan")) - started
    return out


def power_off(vm: Vm, disk: str) -> None:
    """Stopped, and its data partition checked offline (its journal replayed): the disk as a
    clean power-off leaves it, so the next boot has nothing to check."""
    vm.stop()
    with DataFs(disk) as fs:
        fs.fsck()
        fs.commit()


def boots(a, art, tmp: str, i: int) -> tuple[dict, dict, dict]:
    """One run: a first boot, a second boot of the same disk, and the reference."""
    disk = os.path.join(tmp, "disk.img")
    subprocess.run(["cp", "--sparse=always", art["img"], disk], check=True)
    os.truncate(disk, 1 << 30)
    memory = 1024 if a.arch == "amd64" else 1536
    vm = Vm(disk, a.arch, workdir=os.path.join(tmp, f"vm{i}"), uefi=a.uefi, memory_mb=memory,
            cmdline_extra="nnos.bootcpu" if a.cpu else "")
    try:
        started = time.monotonic()
        vm.start()
        first = phases(one_boot(vm, True), started)
        power_off(vm, disk)   # a second boot: the data partition exists, nothing to provision
        started = time.monotonic()
        vm.start()
        second = phases(one_boot(vm, True), started)
    finally:
        vm.stop()
    # always through -kernel: only that path takes the extra kernel argument that selects it
    ref = Vm(disk, a.arch, workdir=os.path.join(tmp, f"ref{i}"), memory_mb=memory, cmdline_extra=REFERENCE)
    try:
        started = time.monotonic()
        ref.start()
        reference = phases(one_boot(ref, False, reference=True), started)
    finally:
        ref.stop()
    return first, second, reference


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--uefi", action="store_true")
    ap.add_argument("--timeline", action="store_true", help="print each boot's console timeline")
    ap.add_argument("--cpu", action="store_true", help="boot nnos with nnos.bootcpu: print where the CPUs went "
                    "between the first tick and the control plane's readiness")
    a = ap.parse_args(argv)
    global TIMELINE, CPU
    TIMELINE, CPU = a.timeline, a.cpu
    art = artifacts(a.arch)
    runs = {"first boot": [], "second boot": [], "reference": []}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for i in range(a.runs):
            first, second, reference = boots(a, art, tmp, i)
            for k, r in zip(runs, (first, second, reference)):
                if r is not None:
                    runs[k].append(r)
                    print(f"run {i + 1}: {k:<12} " + ", ".join(f"{p} {v:.2f}" for p, v in r.items()), file=sys.stderr)
    with open(os.path.join(OUT, f"nnos-{a.arch}.manifest.json")) as f:
        man = json.load(f)
    accel = "KVM" if kvm_works(a.arch) else "TCG"
    print(f"\nnnos-{a.arch}.img under qemu {accel}{' (UEFI + GRUB)' if a.uefi else ' (-kernel)'}, "
          f"median of {a.runs} (seconds)")
    cols = [k for k in runs if runs[k]]
    print(f"{'phase':<28}" + "".join(f"{k:>13}" for k in cols))
    for p in runs["first boot"][0]:
        cells = [statistics.median(r[p] for r in runs[k]) if p in runs[k][0] else float("nan") for k in cols]
        print(f"{p:<28}" + "".join(f"{v:>13.2f}" for v in cells))
    mb = 1 << 20
    print(f"image {man['image_bytes'] / mb:.0f} MiB ({man['image_allocated_bytes'] / mb:.0f} MiB allocated; "
          f"root B empty), squashfs root {man['squashfs_bytes'] / mb:.0f} MiB, build {man['build_s']:.0f} s")
    boots_ = runs["second boot"] or runs["first boot"]
    init_tick = statistics.median(r["init→first tick"] for r in boots_)
    qemu_tick = statistics.median(r["qemu start→first tick"] for r in boots_)
    ref_tick = statistics.median(r["init→first tick"] for r in runs["reference"])
    ok_order = all(r.get("first tick→API ready", 1) > 0 for r in runs["first boot"] + runs["second boot"])
    print(f"targets ({'second' if runs['second boot'] else 'first'} boots): first tick before API ready: "
          f"{'✓' if ok_order else '✗'}; init → first tick ≤ 3 s: {init_tick:.2f} s {'✓' if init_tick <= 3 else '✗'} "
          f"(reference {ref_tick:.2f} s, ratio {init_tick / ref_tick:.2f}); qemu start → first tick ≤ 8 s: "
          f"{qemu_tick:.2f} s {'✓' if qemu_tick <= 8 else '✗'}; image ≤ 400 MB: {man['image_bytes'] / 1e6:.0f} MB "
          f"{'✓' if man['image_bytes'] <= 400e6 else '✗'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
