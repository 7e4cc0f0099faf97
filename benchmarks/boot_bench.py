"""Boot timeline of the built image in qemu, median of N fresh first boots (and N second boots):
qemu start → kernel → initramfs → init → first tick → control plane ready → HTTP answered,
plus the image's size and build time (from its manifest).

    python benchmarks/boot_bench.py [--arch amd64|arm64] [--runs 3] [--uefi]

Reference measured on this kind of machine (plain Debian rootfs + a numpy loop, qemu TCG):
kernel → init 5.4–8 s; init → first tick 2.0–2.7 s; qemu start → HTTP 11–13 s.
Targets: first tick before the API is ready; first tick ≤ 5 s after init (TCG); image ≤ 400 MB.
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

from image.vm import OUT, Vm, artifacts  # noqa: E402

EVENTS = {"initramfs": "initramfs: started", "init": "init: started", "supervisor": "supervisor: started",
          "first_tick": "loop: first tick", "api_ready": "control plane: ready"}


def one_boot(vm: Vm, api: bool, mark: int = 0, timeout: float = 600) -> dict:
    """Host clock of each console event as it appears, and the guest's own stamps."""
    host = {}
    t_start = time.monotonic()
    end = t_start + timeout
    want = EVENTS if api else {k: v for k, v in EVENTS.items() if k != "api_ready"}
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
    return {"host": host, "guest": guest}


def phases(b: dict, started: float) -> dict:
    g = b["guest"]
    kernel_host = b["host"]["initramfs"] - g["initramfs"]     # host clock when the kernel began
    out = {"qemu→kernel": kernel_host - started, "kernel→initramfs": g["initramfs"],
           "initramfs→init": g["init"] - g["initramfs"], "kernel→init": g["init"],
           "init→first tick": g["first_tick"] - g["init"]}
    if "api_ready" in g:
        out["first tick→API ready"] = g["api_ready"] - g["first_tick"]
        out["qemu start→HTTP answered"] = b["host"].get("http", float("nan")) - started
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--uefi", action="store_true")
    a = ap.parse_args(argv)
    art = artifacts(a.arch)
    api = a.arch == "amd64"
    first, second = [], []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for i in range(a.runs):
            disk = os.path.join(tmp, "disk.img")
            subprocess.run(["cp", "--sparse=always", art["img"], disk], check=True)
            os.truncate(disk, 1 << 30)
            vm = Vm(disk, a.arch, workdir=os.path.join(tmp, f"vm{i}"), uefi=a.uefi,
                    memory_mb=1024 if a.arch == "amd64" else 1536)
            try:
                started = time.monotonic()
                vm.start()
                first.append(phases(one_boot(vm, api), started))
                if api:           # a second boot: the data partition exists, nothing to provision
                    vm.stop()
                    started = time.monotonic()
                    vm.start()
                    second.append(phases(one_boot(vm, api), started))
            finally:
                vm.stop()
            print(f"run {i + 1}: first boot " + ", ".join(f"{k} {v:.2f}" for k, v in first[-1].items()) +
                  (("\n       second boot " + ", ".join(f"{k} {v:.2f}" for k, v in second[-1].items())) if second else ""),
                  file=sys.stderr)
    with open(os.path.join(OUT, f"nnos-{a.arch}.manifest.json")) as f:
        man = json.load(f)
    print(f"\nnnos-{a.arch}.img under qemu {vm.accel.upper()}{' (UEFI + GRUB)' if a.uefi else ' (-kernel)'}, "
          f"median of {a.runs} (seconds)")
    print(f"{'phase':<28}{'first boot':>12}{'second boot':>13}")
    for k in first[0]:
        med1 = statistics.median(r[k] for r in first)
        med2 = statistics.median(r[k] for r in second) if second else float("nan")
        print(f"{k:<28}{med1:>12.2f}{med2:>13.2f}")
    mb = 1 << 20
    print(f"image {man['image_bytes'] / mb:.0f} MiB ({man['image_allocated_bytes'] / mb:.0f} MiB allocated; "
          f"root B empty), squashfs root {man['squashfs_bytes'] / mb:.0f} MiB, build {man['build_s']:.0f} s")
    init_to_tick = statistics.median(r["init→first tick"] for r in (second or first))
    ok_order = all(r.get("first tick→API ready", 1) > 0 for r in first + second)
    print(f"targets: first tick before API ready: {'✓' if ok_order else '✗'}; "
          f"init → first tick ≤ 5 s (second boots): {init_to_tick:.2f} s {'✓' if init_to_tick <= 5 else '✗'}; "
          f"image ≤ 400 MB: {man['image_bytes'] / 1e6:.0f} MB {'✓' if man['image_bytes'] <= 400e6 else '✗'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
