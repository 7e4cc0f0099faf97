"""System updates (issue 20, item 7), two measurements:

``--casync`` (on this machine): the bytes a device downloads for a second update that changes
only nnos's own files, with RAUC's chunked updates (`rauc convert`: a casync index and chunk
store; the device seeds from its installed slot, so only chunks it lacks are fetched) against
the whole bundle. The second root is the first with every nnos source file changed and
recompiled, squashed with the image's own options. Target: ≤ 20 % of a full bundle.

``--device`` (the built image in qemu, booted through the EFI firmware and GRUB): the install's
time, the bytes it writes, and the loop's lateness while a bundle uploads and installs against
the same length of window without one (from /v1/status, which summarises the last 5 s).

    python benchmarks/update_bench.py --casync [--device]

Needs the built image (./build.sh image).
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "image"))
sys.path.insert(0, os.path.join(ROOT, "image", "lib"))

from bundle import make  # noqa: E402
from rauc_keys import signing_dir  # noqa: E402

OUT = os.path.join(ROOT, "out")
WORK = os.path.join(OUT, "work-amd64")
NNOS = "usr/local/lib/python3.11/dist-packages/nnos"
SQUASH = ["-comp", "zstd", "-Xcompression-level", "15", "-b", "256K", "-noappend", "-quiet", "-no-progress"]


def changed_rootfs(d: str) -> tuple[str, int]:
    """A copy of the image's root (hard links: nothing copied) with every nnos .py file
    rewritten (one line added) and its bytecode recompiled, as a new release of nnos would."""
    tree = os.path.join(d, "rootfs")
    subprocess.run(["cp", "-al", os.path.join(WORK, "rootfs"), tree], check=True)
    n = 0
    for path in glob.glob(os.path.join(tree, NNOS, "**", "*.py"), recursive=True):
        with open(path) as f:
            text = f.read()
        os.unlink(path)                                   # a new file: the image's copy stays as it was
        with open(path, "w") as f:
            f.write(text + "# the next release\n")
        n += 1
    for pyc in glob.glob(os.path.join(tree, NNOS, "**", "__pycache__", "*.pyc"), recursive=True):
        os.unlink(pyc)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-s", tree, "-p", "/", os.path.join(tree, NNOS)],
                   check=True)
    return tree, n


def chunks(store: str) -> dict[str, int]:
    """Chunk id → its (compressed) size, as a casync store holds it."""
    return {os.path.basename(p).split(".")[0]: os.path.getsize(p)
            for p in glob.glob(os.path.join(store, "**", "*.cacnk"), recursive=True)}


def casync(d: str) -> dict:
    keys = signing_dir(None)[0]
    with open(os.path.join(WORK, "compatible")) as f:
        compatible = f.read().strip()
    t0 = time.monotonic()
    tree, files = changed_rootfs(d)
    second = os.path.join(d, "second.sqfs")
    subprocess.run(["mksquashfs", tree, second, *SQUASH], check=True)
    squash_s = time.monotonic() - t0
    made = {}
    for name, sqfs in (("first", os.path.join(WORK, "root.sqfs")), ("second", second)):
        plain = os.path.join(d, f"{name}.raucb")
        make(sqfs, compatible, name, keys, plain)
        ca = os.path.join(d, f"{name}-casync.raucb")
        t0 = time.monotonic()
        subprocess.run(["rauc", "convert", f"--cert={keys}/cert.pem", f"--key={keys}/key.pem", f"--keyring={keys}/ca.pem",
                        f"--signing-keyring={keys}/ca.pem", plain, ca], check=True, capture_output=True)
        made[name] = {"bundle": os.path.getsize(plain), "casync_bundle": os.path.getsize(ca),
                      "store": chunks(ca[:-len(".raucb")] + ".castr"), "convert_s": time.monotonic() - t0}
    have, want = made["first"]["store"], made["second"]["store"]
    fetched = sum(size for cid, size in want.items() if cid not in have)
    return {"files_changed": files, "squash_s": squash_s, "bundle_bytes": made["second"]["bundle"],
            "casync_index_bundle_bytes": made["second"]["casync_bundle"], "store_bytes": sum(want.values()),
            "chunks": len(want), "chunks_new": sum(1 for c in want if c not in have), "fetched_bytes": fetched,
            "convert_s": made["second"]["convert_s"]}


def device(d: str) -> dict:
    """Boot the image, measure the loop with and without an install running."""
    import httpx

    from tests.support.bundles import same_root, work
    from tests.support.image import ARCH, Device, artifacts
    dev = Device(artifacts(ARCH, OUT), d, uefi=True, watchdog_s=5.0)
    try:
        dev.boot(timeout=300)
        dev.wait_status(lambda s: s["update"]["available"] and s["update"]["this_boot"], 180, "judged")
        bundle = same_root(OUT, d, work(OUT)["version"] + ".bench")
        during, done = [], threading.Event()

        def sample():                                     # the loop, all through the upload and install
            with httpx.Client(base_url=dev.client.base_url, headers=dev.client.headers, timeout=60) as c:
                while not done.wait(5):
                    during.append(c.get("/v1/status").json()["loop"])
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        with open(bundle, "rb") as f:
            r = dev.client.post("/v1/system/update", content=f, timeout=900)
        r.raise_for_status()
        upload_s = time.monotonic() - t0
        job = r.json()["job"]
        while (j := dev.client.get(f"/v1/jobs/{job}").json())["state"] == "running":
            time.sleep(1)
        done.set()
        sampler.join()
        window_s = max(30.0, 5.0 * len(during))
        quiet, end = [], time.monotonic() + window_s
        while time.monotonic() < end:
            time.sleep(5)
            quiet.append(dev.status()["loop"])
        return {"bundle_bytes": os.path.getsize(bundle), "image_bytes": os.path.getsize(work(OUT)["sqfs"]),
                "upload_s": upload_s, "job": j["state"],
                "install_s": (j.get("result") or {}).get("install_s"), "error": j.get("error"),
                "during": summary(during), "without": summary(quiet)}
    except httpx.HTTPError as e:
        raise SystemExit(f"the device stopped answering: {e}\n{dev.vm.console()[-3000:]}") from e
    finally:
        dev.close()


def summary(samples: list[dict]) -> dict:
    p99 = sorted(s["lateness_us"]["p99"] for s in samples)
    return {"samples": len(samples), "p99_us_median": p99[len(p99) // 2], "p99_us_worst": p99[-1],
            "max_us": max(s["lateness_us"]["max"] for s in samples),
            "misses": samples[-1]["misses"] - samples[0]["misses"], "failsafe": any(s["failsafe"] for s in samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--casync", action="store_true")
    ap.add_argument("--device", action="store_true")
    a = ap.parse_args()
    if not (a.casync or a.device):
        ap.error("say --casync, --device or both")
    d = tempfile.mkdtemp(prefix="nnos-update-bench-")
    try:
        if a.casync:
            c = casync(d)
            print(f"casync: a second update changing {c['files_changed']} nnos files: full bundle "
                  f"{c['bundle_bytes'] / 2**20:.1f} MiB; casync index bundle {c['casync_index_bundle_bytes'] / 2**10:.0f} KiB "
                  f"+ {c['chunks_new']} of {c['chunks']} chunks new = {c['fetched_bytes'] / 2**20:.1f} MiB fetched "
                  f"({100 * c['fetched_bytes'] / c['bundle_bytes']:.1f} % of the full bundle; target ≤ 20 %)")
        if a.device:
            r = device(d)
            print(f"device: bundle {r['bundle_bytes'] / 2**20:.0f} MiB uploaded in {r['upload_s']:.1f} s, installed "
                  f"({r['job']}) in {r['install_s']} s, writing the slot's {r['image_bytes'] / 2**20:.0f} MiB image")
            for k in ("without", "during"):
                s = r[k]
                print(f"  loop {k:>7} an install: 5-s p99 median {s['p99_us_median']:.0f} µs, worst {s['p99_us_worst']:.0f} µs, "
                      f"max {s['max_us']:.0f} µs, misses {s['misses']}, failsafe {s['failsafe']} ({s['samples']} samples)")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
