"""Build the bootable disk image: `./build.sh image [--arch amd64|arm64] [--board FILE] [--model FILE]`.

The build is the numbered shell scripts in image/steps/, run in order with one environment
(below); this driver only times them, logs each begin/end, and prints the summary. What goes
in is data: packages.txt, kernel.txt, modules.txt, initramfs-modules.txt and overlay/.

Outputs in out/: nnos-ARCH.img (the GPT disk), nnos-ARCH.vmlinuz and nnos-ARCH.initrd.img (the
boot partition's kernel and initramfs, for qemu -kernel boots), nnos-ARCH.manifest.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}


def log(msg: str) -> None:
    sys.stderr.write(f"[image {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def inputs_digest(arch: str, board: str, model: str | None, hw: str | None = None) -> str:
    """A hash of everything the image is made from (this directory, nnos, hardware, the default
    model, the pinned dependencies' source, the build options): the boot tests rebuild when it
    changes."""
    import hashlib
    h = hashlib.sha256(f"{arch} {os.path.abspath(board)} {model or ''} {hw or ''}".encode())
    for top in ("image", "nnos", "hardware", "models/cartpole", *([hw] if hw else [])):
        for d, dirs, files in sorted(os.walk(os.path.join(REPO, top))):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in sorted(files):
                if f.endswith(".pyc"):
                    continue
                with open(os.path.join(d, f), "rb") as fh:
                    h.update(os.path.relpath(os.path.join(d, f), REPO).encode() + b"\0" + fh.read())
    for f in ("pyproject.toml", board, *( [model] if model else [])):
        with open(f if os.path.isabs(f) else os.path.join(REPO, f), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:24]


def steps(hw: str | None = None) -> list[tuple[str, str]]:
    """(name, path) of the numbered build steps: image/steps/ and the hardware hook's steps/,
    merged in number order (a hook's 65-firmware.sh runs between 60-boot and 70-disk)."""
    found = []
    for d in [os.path.join(HERE, "steps")] + ([os.path.join(hw, "steps")] if hw else []):
        if os.path.isdir(d):
            found += [(f, os.path.join(d, f)) for f in os.listdir(d) if f[:2].isdigit() and f.endswith(".sh")]
    return sorted(found)


def merge_lists(work: str, hw: str | None) -> dict:
    """The data lists the steps read: this directory's, plus the hardware hook's additions."""
    out = {}
    os.makedirs(os.path.join(work, "lists"), exist_ok=True)
    for env, name in (("PACKAGES", "packages.txt"), ("MODULES", "modules.txt"),
                      ("INITRAMFS_MODULES", "initramfs-modules.txt")):
        text = open(os.path.join(HERE, name)).read()
        if hw and os.path.exists(os.path.join(hw, name)):
            text += f"\n# from {hw}\n" + open(os.path.join(hw, name)).read()
        path = os.path.join(work, "lists", name)
        with open(path, "w") as f:
            f.write(text)
        out[env] = path
    overlays = [os.path.join(HERE, "overlay")] + ([os.path.join(hw, "overlay")] if hw else [])
    out["OVERLAYS"] = " ".join(d for d in overlays if os.path.isdir(d))
    return out


def run_step(name: str, path: str, env: dict) -> float:
    log(f"step {name}: begin")
    t0 = time.monotonic()
    r = subprocess.run(["bash", path], env=env, cwd=REPO)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        log(f"step {name}: FAILED (exit {r.returncode}) after {dt:.1f} s")
        raise SystemExit(f"image build failed in step {name}")
    log(f"step {name}: end ({dt:.1f} s)")
    return dt


def summary(out: str, arch: str, timings: dict, total: float) -> dict:
    img = os.path.join(out, f"nnos-{arch}.img")
    with open(os.path.join(out, f"nnos-{arch}.contents.json")) as f:
        contents = json.load(f)
    st = os.stat(img)
    m = {"arch": arch, "image": img, "image_bytes": st.st_size, "image_allocated_bytes": st.st_blocks * 512,
         "build_s": round(total, 1), "steps_s": {k: round(v, 1) for k, v in timings.items()}, **contents}
    with open(os.path.join(out, f"nnos-{arch}.manifest.json"), "w") as f:
        json.dump(m, f, indent=1)
    mb = 1 << 20
    log(f"image {img}: {st.st_size / mb:.0f} MiB ({st.st_blocks * 512 / mb:.0f} MiB allocated; root B is empty)")
    for p in contents["partitions"]:
        log(f"  {p['name']:<10} {p['size'] / mb:7.1f} MiB  {p['content']}")
    log(f"  root filesystem: {contents['rootfs_bytes'] / mb:.0f} MiB unpacked, "
        f"squashfs {contents['squashfs_bytes'] / mb:.0f} MiB; "
        f"{contents['debian_packages']} Debian packages, {len(contents['python_packages'])} Python packages; "
        f"kernel {contents['kernel']}")
    for k, v in contents["largest"].items():
        log(f"    {k:<44} {v / mb:6.1f} MiB")
    log(f"  default model: {contents['model']} → plan {contents['plan_id'][:12]} (checked against the reference)")
    cpu = contents.get("cpu_backend") or {}
    if cpu:
        log(f"  cpu backend: the C compiler adds {cpu['unpacked_bytes'] / mb:.1f} MiB ({cpu['squashfs_bytes'] / mb:.1f} MiB "
            f"of squashfs); the default model's object built for {cpu['target']}: {', '.join(cpu['prebuilt_objects'])}")
    log(f"built in {total:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="build.sh image", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=host_arch(), choices=sorted(ARCHES))
    ap.add_argument("--board", default=os.path.join(REPO, "hardware", "boards", "cartpole-sim.toml"),
                    help="the board config the image starts with")
    ap.add_argument("--model", help="the default model (ONNX); default: the board's model")
    ap.add_argument("--hw", help="a hardware hook directory (see BOARDS.md): extra packages.txt, modules.txt, "
                    "initramfs-modules.txt, overlay/ and numbered steps/ for a specific board")
    ap.add_argument("--cpu-target", help="the CPU the cpu backend's objects are built for on the device "
                    "(x86-64-v2 … v4, armv8-a; default: x86-64-v2 on amd64, armv8-a on arm64)")
    ap.add_argument("--suite", default="bookworm", choices=("bookworm", "trixie"),
                    help="the Debian release (trixie: Mesa 25 and a 6.12 kernel, for the Pi 5's and RK3588's GPUs)")
    ap.add_argument("--out", default=os.path.join(REPO, "out"))
    ap.add_argument("--only", help="run only the steps whose names start with these (comma separated)")
    ap.add_argument("--signing-key", metavar="DIR", help="sign the update bundle with DIR/key.pem and DIR/cert.pem; "
                    "the image trusts DIR/ca.pem (default: a development CA made once on this machine)")
    a = ap.parse_args(argv)
    if a.cpu_target:
        sys.path.insert(0, REPO)
        from nnos.backends.cpu.toolchain import TARGETS
        if a.cpu_target not in TARGETS or TARGETS[a.cpu_target][0] != ARCHES[a.arch]:
            raise SystemExit(f"--cpu-target {a.cpu_target}: expected one of "
                             f"{', '.join(n for n, t in TARGETS.items() if t[0] == ARCHES[a.arch])} for {a.arch}")
    if os.geteuid() != 0:
        raise SystemExit("the image build needs root (mmdebstrap, chroot, device nodes in the root filesystem)")
    for tool in ("mmdebstrap", "mksquashfs", "sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "cpio", "lz4", "depmod"):
        if shutil.which(tool) is None:
            raise SystemExit(f"missing build tool {tool!r}: run ./build.sh image (it installs them)")
    work = os.path.join(a.out, f"work-{a.arch}")
    os.makedirs(work, exist_ok=True)
    sys.path.insert(0, os.path.join(HERE, "lib"))
    from rauc_keys import signing_dir
    signing, dev_keys = signing_dir(a.signing_key)
    if dev_keys:
        log(f"WARNING: update bundles are signed with the development key in {signing} (made on this machine, "
            "kept out of git): devices built now accept bundles built here only; pass --signing-key for a product")
    env = dict(os.environ, ARCH=a.arch, QEMU_ARCH=ARCHES[a.arch], REPO=REPO, IMAGE_DIR=HERE, OUT=os.path.abspath(a.out),
               WORK=work, ROOTFS=os.path.join(work, "rootfs"), CACHE=os.path.join(REPO, "out", "cache"),
               HW_DIR=os.path.abspath(a.hw) if a.hw else "", **merge_lists(work, os.path.abspath(a.hw) if a.hw else None),
               BOARD=os.path.abspath(a.board), MODEL=os.path.abspath(a.model) if a.model else "",
               HOST_PY=sys.executable, CPU_TARGET=a.cpu_target or "", LC_ALL="C.UTF-8", SUITE=a.suite,
               SIGNING_DIR=signing,
               SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "1764028800"))
    chosen = steps(a.hw)
    if a.only:
        chosen = [(n, p) for n, p in chosen if any(n.startswith(x) for x in a.only.split(","))]
    log(f"building nnos-{a.arch}.img: board {os.path.relpath(a.board, REPO)}"
        f"{'; hardware hook ' + a.hw if a.hw else ''}; steps {', '.join(n for n, _ in chosen)}")
    t0 = time.monotonic()
    timings = {n[:-3]: run_step(n, p, env) for n, p in chosen}
    if not a.only:
        summary(a.out, a.arch, timings, time.monotonic() - t0)
        with open(os.path.join(a.out, f"nnos-{a.arch}.inputs"), "w") as f:
            f.write(inputs_digest(a.arch, a.board, a.model, a.hw) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
