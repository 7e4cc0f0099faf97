"""Compile generated C into a shared object, through a cache, and load it.

The cache key is a hash of (source, compiler identity, flags, CPU features); the object is
written under a temporary name and renamed into place, and carries its key as a symbol that is
checked after loading — a stale, foreign or half-written object is never used. Every failure
(no compiler, a compiler error, an unwritable cache) is a CompilerError with the reason; the
backend turns it into a fallback to numpy.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

from ... import flags
from ...errors import BackendError


class CompilerError(BackendError):
    pass


def find_compiler() -> str | None:
    want = flags.CC.get()
    if want:
        return shutil.which(want)
    return next((p for p in (shutil.which(c) for c in ("gcc", "cc", "clang")) if p), None)


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


def flags_for(features: set[str], native: bool = True) -> list[str]:
    # no -ffast-math: it implies -ffinite-math-only and NaN must propagate to the loop's check;
    # -fwrapv: integer overflow wraps, as numpy's does; -fexcess-precision=standard: a float16
    # value is rounded at every assignment and cast, as numpy rounds after every op
    out = ["-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast",
           "-fno-semantic-interposition", "-fwrapv", "-fexcess-precision=standard",
           "-Wno-unused-variable", "-Wno-unused-function"]
    if native:
        out.append("-march=native")
        if "avx512f" in features:
            out.append("-mprefer-vector-width=512")
    return out


@functools.lru_cache(maxsize=8)
def _identity(cc: str, mtime: float) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired) as e:
        raise CompilerError(f"the C compiler {cc} does not run: {e}") from e


def cache_dir() -> str:
    return os.path.expanduser(flags.CPU_CACHE.get())


def _key(source: str) -> tuple[str, str, list[str], str]:
    """(compiler, its identity, flags, cache key) for ``source`` on this machine."""
    cc = find_compiler()
    if cc is None:
        raise CompilerError("no C compiler found (gcc, cc or clang; NNOS_CC names another): "
                            "the cpu backend needs one")
    feats = cpu_features()
    ident = _identity(cc, os.path.getmtime(cc))
    fl = flags_for(feats)
    key = hashlib.sha256("\0".join([source, ident, " ".join(fl), platform.machine(),
                                    " ".join(sorted(feats))]).encode()).hexdigest()
    return cc, ident, fl, key


def object_path(key: str) -> str:
    return os.path.join(cache_dir(), f"plan-{key[:32]}.so")


def is_cached(source: str) -> bool:
    try:
        return os.path.exists(object_path(_key(source)[3]))
    except CompilerError:
        return False


def build(source: str) -> tuple[ctypes.CDLL, dict]:
    """Compile (or find in the cache) and load; returns (library, facts for reports)."""
    cc, ident, fl, key = _key(source)
    keyed = source + f'\nconst char nnos_key[] = "{key}";\n'
    d = cache_dir()
    path = object_path(key)
    facts = {"compiler": ident, "flags": fl, "key": key, "object": path, "cached": os.path.exists(path)}
    if not facts["cached"]:
        try:
            os.makedirs(d, exist_ok=True)
            fd, tmp_so = tempfile.mkstemp(prefix=".plan-", suffix=".so", dir=d)
            os.close(fd)
        except OSError as e:
            raise CompilerError(f"the compiled-plan cache {d} is not writable: {e.strerror}") from e
        try:
            _compile(cc, keyed, fl, tmp_so, d)
            os.replace(tmp_so, path)
        finally:
            if os.path.exists(tmp_so):
                os.unlink(tmp_so)
    try:
        lib = ctypes.CDLL(path)
        got = (ctypes.c_char * 65).in_dll(lib, "nnos_key").value       # a char array, not a pointer
    except (OSError, ValueError) as e:
        raise CompilerError(f"the compiled plan {path} does not load: {e}") from e
    if got.decode(errors="replace") != key:
        raise CompilerError(f"the compiled plan {path} is not the one this plan needs (a stale or foreign object)")
    return lib, facts


def _compile(cc: str, source: str, fl: list[str], out: str, d: str) -> None:
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        src = os.path.join(tmp, "plan.c")
        with open(src, "w") as f:
            f.write(source)
        try:
            r = subprocess.run([cc, *fl, src, "-o", out, "-lm"], capture_output=True, text=True, timeout=120)
            if r.returncode != 0 and "-march=native" in fl:      # a compiler that does not know this CPU
                portable = [x for x in fl if x not in ("-march=native", "-mprefer-vector-width=512")]
                r = subprocess.run([cc, *portable, src, "-o", out, "-lm"], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CompilerError(f"{cc} failed to run: {e}") from e
        if r.returncode != 0:
            err = r.stderr.strip().splitlines()
            raise CompilerError(f"{cc} refused the generated plan ({r.returncode}): " + " | ".join(err[:8]))
