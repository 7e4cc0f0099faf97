"""Compile generated C into a shared object, through a cache, and load it.

The cache key is a hash of (source, compiler identity, flags, CPU features); the object is
written under a temporary name and renamed into place, and carries its key as a symbol that is
checked after loading — a stale, foreign or half-written object is never used. Every failure
(no compiler, a compiler error, an unwritable cache) is a ToolchainError with the reason; the
backend turns it into a fallback to numpy.
"""
from __future__ import annotations

import ctypes
import functools
import os
import subprocess

from ... import flags, fsutil
from ...digest import sha256
from ...errors import BackendError
from .units import cpus, units


class ToolchainError(BackendError):
    pass


def find_compiler() -> str | None:
    want = flags.CC.get()
    if want:
        return which(want)
    return next((p for p in (which(c) for c in ("gcc", "cc", "clang")) if p), None)


def which(name: str) -> str | None:
    """An executable on PATH (or ``name`` itself when it has a directory), as shutil.which finds
    it, without shutil's import (bz2, lzma, fnmatch: 0.05 s of an emulated arm64 boot's imports,
    where auto asks the backends whether they can run; benchmarks/RESULTS.md, issue 21)."""
    def runnable(path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.X_OK)
    if os.path.dirname(name):
        return name if runnable(name) else None
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(d or os.curdir, name)
        if runnable(path):
            return path
    return None


@functools.lru_cache(maxsize=1)
def cpu_features() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def vector_width(features: set[str]) -> int:
    """Floats per vector: 16 with AVX-512, 8 with AVX2, else 4 (SSE, NEON)."""
    if "avx512f" in features:
        return 16
    if "avx2" in features and "fma" in features:
        return 8
    return 4


# Named targets: an object built for one runs on every CPU that has its features, so it can be
# built ahead of time (the image builds its default model's) and used wherever those are present.
# name: (machine, -march value, /proc/cpuinfo flags it needs, floats per vector)
_V2 = {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}
_V3 = _V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
TARGETS = {
    "x86-64-v2": ("x86_64", "x86-64-v2", _V2, 4),
    "x86-64-v3": ("x86_64", "x86-64-v3", _V3, 8),
    "x86-64-v4": ("x86_64", "x86-64-v4", _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}, 16),
    "armv8-a": ("aarch64", "armv8-a", set(), 4),
}


def target() -> tuple[str, int]:
    """(the target objects are built for, its floats per vector): "native" (this CPU, every
    feature it has) unless NNOS_CPU_TARGET names one of TARGETS, which this CPU must have."""
    name = flags.CPU_TARGET.get()
    if not name or name == "native":
        return "native", vector_width(cpu_features())
    if name not in TARGETS:
        raise ToolchainError(f"NNOS_CPU_TARGET={name!r}: expected native or one of {', '.join(TARGETS)}")
    machine, _, needs, vw = TARGETS[name]
    if os.uname().machine != machine:
        raise ToolchainError(f"NNOS_CPU_TARGET={name} is for {machine}; this machine is {os.uname().machine}")
    missing = needs - cpu_features()
    if missing:
        raise ToolchainError(f"this CPU lacks what target {name} needs: {', '.join(sorted(missing))}")
    return name, vw


LARGE_SOURCE_LINES = 800


def optimization(source: str) -> list[str]:
    """-O3, or for a large plan -O2 with unrolled loops: gcc's -O3 time grows faster than the
    function (act_s, 1 900 lines: 4.2 s against 2.1 s), and the kernels are vectorized by hand.
    Measured on the zoo exports: act_s +2 % run time, mbv2_s −21 %, res5_s −6 %; the small CNNs
    (cnn_l: −22 % at -O2) stay below the threshold, at -O3."""
    return ["-O3"] if source.count("\n") < LARGE_SOURCE_LINES else ["-O2", "-funroll-loops"]


def flags_for(features: set[str], native: bool = True, march: str | None = None) -> list[str]:
    # no -ffast-math: it implies -ffinite-math-only and NaN must propagate to the loop's check;
    # -fwrapv: integer overflow wraps, as numpy's does; -fexcess-precision=standard: a float16
    # value is rounded at every assignment and cast, as numpy rounds after every op
    out = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast",
           "-fno-semantic-interposition", "-fwrapv", "-fexcess-precision=standard",
           "-Wno-unused-variable", "-Wno-unused-function", "-pthread"]
    if march:
        out.append(f"-march={march}")
        if march == "x86-64-v4":
            out.append("-mprefer-vector-width=512")
    elif native:
        out.append("-march=native")
        if "avx512f" in features:
            out.append("-mprefer-vector-width=512")
    return out


@functools.lru_cache(maxsize=8)
def _identity(cc: str, mtime: float) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired) as e:
        raise ToolchainError(f"the C compiler {cc} does not run: {e}") from e


def cache_dir() -> str:
    return os.path.expanduser(flags.CPU_CACHE.get())


def prebuilt_dirs() -> list[str]:
    """Read-only directories of objects built ahead of time (the image's root), searched first."""
    return [d for d in flags.CPU_PREBUILT.get().split(":") if d]


def _key(source: str) -> tuple[str, str, list[str], str]:
    """(compiler, its identity, flags, cache key) for ``source``: a hash of the source, the
    compiler, the flags, the machine and the target — for "native", this CPU's every feature."""
    cc = find_compiler()
    if cc is None:
        raise ToolchainError("no C compiler found (gcc, cc or clang; NNOS_CC names another): "
                            "the cpu backend needs one")
    name, _ = target()
    feats = cpu_features()
    ident = _identity(cc, os.path.getmtime(cc))
    fl = flags_for(feats) if name == "native" else flags_for(feats, march=TARGETS[name][1])
    fl = [x for f in fl for x in (optimization(source) if f == "-O3" else [f])]
    what = " ".join(sorted(feats)) if name == "native" else f"target {name}"
    key = sha256("\0".join([source, ident, " ".join(fl), os.uname().machine, what]).encode()).hexdigest()
    return cc, ident, fl, key


def root_slot() -> str:
    """The root filesystem slot this runs from (root-a, root-b on the image; "host" elsewhere)."""
    return flags.ROOT_SLOT.get() or "host"


def verification_mark(key: str, weights: str) -> str:
    """The file in the writable cache saying the object of ``key`` was verified with the weights
    of digest ``weights`` from this slot."""
    return os.path.join(cache_dir(), f"verified-{key[:32]}-{weights[:16]}-{root_slot()}")


def object_path(key: str, directory: str | None = None) -> str:
    return os.path.join(directory or cache_dir(), f"plan-{key[:32]}.so")


def _find(key: str) -> tuple[str, bool]:
    """Where the object of ``key`` is or would go: (path, prebuilt?)."""
    for d in prebuilt_dirs():
        path = object_path(key, d)
        if os.path.exists(path):
            return path, True
    return object_path(key), False


def is_cached(source: str) -> bool:
    try:
        return os.path.exists(_find(_key(source)[3])[0])
    except ToolchainError:
        return False


def carries(path: str, key: str) -> bool:
    """The object at ``path`` holds ``key`` (read from its bytes, before anything loads it: a
    stale, foreign or half-written file is never dlopen'ed)."""
    try:
        with open(path, "rb") as f:
            return key.encode() in f.read()
    except OSError:
        return False


def build(source: str) -> tuple[ctypes.CDLL, dict]:
    """Compile (or find in the cache) and load; returns (library, facts for reports).

    An object in the writable cache that does not carry its key (stale, foreign, cut short by a
    power loss) is removed and compiled again; one in a prebuilt directory cannot be, so it is
    refused."""
    cc, ident, fl, key = _key(source)
    keyed = source + f'\nconst char nnos_key[] = "{key}";\n'
    d = cache_dir()
    path, prebuilt = _find(key)
    facts = {"compiler": ident, "flags": fl, "key": key, "object": path, "cached": os.path.exists(path),
             "prebuilt": prebuilt, "target": target()[0]}
    if facts["cached"] and not carries(path, key):
        if prebuilt:
            raise ToolchainError(f"the prebuilt object {path} is not the one this plan needs (a stale or foreign "
                                "object); it was not loaded")
        try:
            os.unlink(path)
        except OSError as e:
            raise ToolchainError(f"the cached object {path} is not the one this plan needs (a stale or foreign "
                                f"object) and cannot be removed: {e.strerror}") from e
        facts.update(cached=False, replaced="a stale or foreign object was in the cache; it was not loaded")
    if not facts["cached"]:
        try:
            os.makedirs(d, exist_ok=True)
            import tempfile
            fd, tmp_so = tempfile.mkstemp(prefix=".plan-", suffix=".so", dir=d)
            os.close(fd)
        except OSError as e:
            raise ToolchainError(f"the compiled-plan cache {d} is not writable: {e.strerror}") from e
        try:
            _compile(cc, keyed, fl, tmp_so, d)
            fsutil.fsync_path(tmp_so)          # whole on disk before it has its name
            os.replace(tmp_so, path)
            fsutil.fsync_dir(d)
        except OSError as e:
            raise ToolchainError(f"the compiled-plan cache {d}: {e.strerror or e}") from e
        finally:
            if os.path.exists(tmp_so):
                os.unlink(tmp_so)
    return load(path, key), facts


def load(path: str, key: str) -> ctypes.CDLL:
    """The object at ``path``, loaded, and checked to be the one of ``key``."""
    try:
        lib = ctypes.CDLL(path)
        got = (ctypes.c_char * 65).in_dll(lib, "nnos_key").value       # a char array, not a pointer
    except (OSError, ValueError) as e:
        raise ToolchainError(f"the compiled plan {path} does not load: {e}") from e
    if got.decode(errors="replace") != key:
        raise ToolchainError(f"the compiled plan {path} is not the one this plan needs (a stale or foreign object)")
    return lib


def _compile(cc: str, source: str, fl: list[str], out: str, d: str) -> None:
    import tempfile
    try:
        tmpdir = tempfile.TemporaryDirectory(dir=d)
    except OSError as e:
        raise ToolchainError(f"the compiled-plan cache {d} is not writable: {e.strerror}") from e
    with tmpdir as tmp:
        srcs = []
        try:
            for k, text in enumerate(units(source, min(2, cpus()))):
                srcs.append(os.path.join(tmp, f"plan{k}.c"))
                with open(srcs[-1], "w") as f:
                    f.write(text)
        except OSError as e:
            raise ToolchainError(f"the compiled-plan cache {d}: cannot write the source: {e.strerror}") from e
        try:
            rc, err = _gcc(cc, fl, srcs, out)
            if rc != 0 and "-march=native" in fl:      # a compiler that does not know this CPU
                rc, err = _gcc(cc, [x for x in fl if x not in ("-march=native", "-mprefer-vector-width=512")], srcs, out)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ToolchainError(f"{cc} failed to run: {e}") from e
        if rc != 0:
            raise ToolchainError(f"{cc} refused the generated plan ({rc}): " + " | ".join(err.strip().splitlines()[:8]))


def _gcc(cc: str, fl: list[str], srcs: list[str], out: str) -> tuple[int, str]:
    """One source straight to the object; several (units.py) compiled at once, then linked."""
    timeout = flags.CC_TIMEOUT_S.get()
    if len(srcs) == 1:
        r = subprocess.run([cc, *fl, srcs[0], "-o", out, "-lm"], capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stderr
    objs = [s[:-2] + ".o" for s in srcs]
    compile_fl = [x for x in fl if x != "-shared"]
    procs = [subprocess.Popen([cc, *compile_fl, "-c", s, "-o", o], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for s, o in zip(srcs, objs)]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, err))
    for rc, err in results:
        if rc != 0:
            return rc, err
    r = subprocess.run([cc, *fl, *objs, "-o", out, "-lm"], capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stderr
