"""Kernel modules for the image, from data files.

    python3 modules.py prune ROOTFS KEEP_LIST        keep the listed subtrees (+ dependencies)
    python3 modules.py initramfs ROOTFS LIST DEST    copy LIST's modules (+ dependencies) to
                                                     DEST/lib/modules and write DEST/modules.order
                                                     (load order: dependencies first)

modules.dep lines are "kernel/a.ko: kernel/b.ko kernel/c.ko" (b, c needed by a).
"""
from __future__ import annotations

import gzip
import lzma
import os
import shutil
import sys


def kernel_dir(rootfs: str) -> str:
    base = os.path.join(rootfs, "lib", "modules")
    versions = sorted(os.listdir(base))
    if len(versions) != 1:
        raise SystemExit(f"expected one kernel in {base}, found {versions}")
    return os.path.join(base, versions[0])


def read_list(path: str) -> list[str]:
    with open(path) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def read_deps(kdir: str) -> dict[str, list[str]]:
    deps = {}
    with open(os.path.join(kdir, "modules.dep")) as f:
        for line in f:
            mod, _, rest = line.partition(":")
            deps[mod.strip()] = rest.split()
    return deps


def closure(wanted: list[str], deps: dict[str, list[str]]) -> list[str]:
    """Modules in load order: each after everything it needs."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(m: str) -> None:
        if m in seen:
            return
        seen.add(m)
        for d in deps.get(m, []):
            visit(d)
        order.append(m)
    for m in wanted:
        visit(m)
    return order


def prune(rootfs: str, keep_file: str) -> None:
    kdir = kernel_dir(rootfs)
    deps = read_deps(kdir)
    prefixes = ["kernel/" + p for p in read_list(keep_file)]
    plain = {m: m[:m.index(".ko") + 3] for m in deps}            # kernel/x.ko.xz is kernel/x.ko's
    wanted = [m for m in deps if any(plain[m] == p or (p.endswith("/") and m.startswith(p)) for p in prefixes)]
    keep = set(closure(wanted, deps))
    removed = size = 0
    for m in deps:
        if m not in keep:
            path = os.path.join(kdir, m)
            size += os.path.getsize(path)
            os.unlink(path)
            removed += 1
    for top, dirs, files in os.walk(os.path.join(kdir, "kernel"), topdown=False):
        if not os.listdir(top):
            os.rmdir(top)
    print(f"kernel modules: kept {len(keep)}, removed {removed} ({size / 2**20:.0f} MiB)")


def module_file(m: str) -> str:
    """A module's file name as the initramfs keeps it: name.ko (a kernel that compresses its
    modules, as Debian 13's does with xz, has them unpacked here: busybox's insmod reads plain ones)."""
    base = os.path.basename(m)
    return base[:base.index(".ko") + 3]


def initramfs(rootfs: str, list_file: str, dest: str) -> None:
    kdir = kernel_dir(rootfs)
    deps = read_deps(kdir)
    by_name = {module_file(m)[:-3].replace("-", "_"): m for m in deps}
    names = read_list(list_file)
    wanted = [by_name[n] for n in names if n in by_name]
    skipped = [n for n in names if n not in by_name]
    order = closure(wanted, deps)
    os.makedirs(os.path.join(dest, "lib", "modules"), exist_ok=True)
    for m in order:
        src, dst = os.path.join(kdir, m), os.path.join(dest, "lib", "modules", module_file(m))
        if m.endswith(".ko"):
            shutil.copy2(src, dst)
        else:
            opener = {".xz": lzma.open, ".gz": gzip.open}.get(os.path.splitext(m)[1])
            if opener is None:
                raise SystemExit(f"module {m}: a compression this build cannot unpack")
            with opener(src) as f, open(dst, "wb") as out:
                shutil.copyfileobj(f, out)
    with open(os.path.join(dest, "modules.order"), "w") as f:
        f.write("".join(module_file(m) + "\n" for m in order))
    print(f"initramfs modules: {len(order)} ({', '.join(module_file(m)[:-3] for m in order)}); "
          f"not modules in this kernel: {', '.join(skipped) or 'none'}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"prune": prune, "initramfs": initramfs}[cmd](*args)
