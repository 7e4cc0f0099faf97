"""Check that every ELF program and library in a root filesystem finds the shared libraries it
needs (DT_NEEDED, searched in its RPATH/RUNPATH with $ORIGIN, then the system library
directories) — after the build has removed packages nothing should need.

    python3 image/lib/elfcheck.py ROOTFS        exit 1 and a list when something is missing

Reads the ELF headers directly (32/64-bit, either byte order): no ldd, no chroot, so it checks
a foreign architecture's root as well.
"""
from __future__ import annotations

import os
import struct
import sys

SYSTEM_DIRS = ("usr/lib", "lib", "usr/lib64", "lib64")
# plugins loaded only on request whose library the image leaves out on purpose (file name suffix: why)
ALLOWED = {"/tc/q_atm.so": "iproute2's ATM qdisc plugin (libatm is a recommendation; no ATM here)"}
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 1, 5, 15, 29


def dynamic(path: str) -> tuple[list[str], list[str]] | None:
    """(needed, search path) of an ELF file; None for anything else (or a static program)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None
    wide, end = data[4] == 2, "<" if data[5] == 1 else ">"
    if wide:
        phoff, phentsize, phnum = struct.unpack_from(end + "Q", data, 32)[0], *struct.unpack_from(end + "HH", data, 54)
        ph = end + "IIQQQQQQ"       # type flags offset vaddr paddr filesz memsz align
    else:
        phoff, phentsize, phnum = struct.unpack_from(end + "I", data, 28)[0], *struct.unpack_from(end + "HH", data, 42)
        ph = end + "IIIIIIII"       # type offset vaddr paddr filesz memsz flags align
    loads, dyn = [], None
    for i in range(phnum):
        f = struct.unpack_from(ph, data, phoff + i * phentsize)
        typ, off, vaddr, filesz = (f[0], f[2], f[3], f[5]) if wide else (f[0], f[1], f[2], f[4])
        if typ == PT_LOAD:
            loads.append((vaddr, off, filesz))
        elif typ == PT_DYNAMIC:
            dyn = (off, filesz)
    if dyn is None:
        return None
    entry = end + ("qQ" if wide else "iI")
    size = struct.calcsize(entry)
    tags = [struct.unpack_from(entry, data, dyn[0] + i) for i in range(0, dyn[1] - size + 1, size)]
    strtab = next((v for t, v in tags if t == DT_STRTAB), None)
    base = next((off + strtab - va for va, off, sz in loads if va <= (strtab or -1) < va + sz), None)
    if base is None:
        return None

    def string(at: int) -> str:
        return data[base + at:data.index(b"\0", base + at)].decode()
    needed = [string(v) for t, v in tags if t == DT_NEEDED]
    search = [p for t, v in tags if t in (DT_RPATH, DT_RUNPATH) for p in string(v).split(":") if p]
    return needed, search


def system_dirs(root: str) -> list[str]:
    """The library directories: the standard ones and their multiarch subdirectories."""
    out = []
    for d in SYSTEM_DIRS:
        full = os.path.join(root, d)
        if os.path.isdir(full):
            out.append(full)
            out += [os.path.join(full, s) for s in sorted(os.listdir(full)) if s.endswith("-linux-gnu")
                    and os.path.isdir(os.path.join(full, s))]
    return out


def missing(root: str) -> list[tuple[str, str]]:
    """(file relative to root, library) for every library some ELF file needs and cannot find."""
    root = os.path.abspath(root)
    dirs = system_dirs(root)
    out = []
    for top in ("usr", "etc", "opt"):
        for d, subdirs, files in os.walk(os.path.join(root, top)):
            subdirs[:] = [s for s in subdirs if not os.path.islink(os.path.join(d, s))]
            if os.path.relpath(d, root).startswith(os.path.join("usr", "lib", "modules")):
                continue
            for name in files:
                path = os.path.join(d, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    info = dynamic(path)
                except (OSError, struct.error, ValueError, IndexError):
                    continue
                if info is None:
                    continue
                needed, search = info
                here = [os.path.join(root, p.replace("$ORIGIN", os.path.relpath(d, root)).lstrip("/"))
                        if "$ORIGIN" in p else os.path.join(root, p.lstrip("/")) for p in search]
                if any(path.endswith(k) for k in ALLOWED):
                    continue
                if ".so" in name and d not in dirs:   # a private library directory (systemd's): its
                    here.append(d)                 # siblings load through the executable's RUNPATH
                for lib in needed:
                    if not any(os.path.exists(os.path.join(x, lib)) for x in here + dirs):
                        out.append((os.path.relpath(path, root), lib))
    return out


def main(argv: list[str]) -> int:
    gaps = missing(argv[1])
    for f, lib in gaps:
        print(f"  {f} needs {lib}: not in the image", file=sys.stderr)
    if gaps:
        print(f"elfcheck: {len(gaps)} missing libraries", file=sys.stderr)
        return 1
    print("elfcheck: every program and library finds what it needs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
