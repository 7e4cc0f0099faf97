"""Crash-safe file writes: a temp file in the same directory, fsync, rename over the target,
fsync the directory. A power cut at any instant leaves the old file or the new one, whole."""
from __future__ import annotations

import os
import tempfile

TMP_PREFIX = ".tmp-"


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(d)


def append_rotating(path: str, data: bytes, max_bytes: int) -> None:
    """Append to a log-like file; past ``max_bytes`` it becomes PATH.1 (one older kept), so it
    never grows without bound. Raises OSError."""
    if os.path.exists(path) and os.path.getsize(path) > max_bytes:
        os.replace(path, path + ".1")
    with open(path, "ab") as f:
        f.write(data)


def fsync_path(path: str) -> None:
    """Flush a file (one another process wrote: a compiler's output) or a directory to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(d: str) -> None:
    fsync_path(d)


def remove_stale_temps(d: str) -> int:
    """Temp files a crash left behind (never the real files: those were renamed into place)."""
    n = 0
    for name in os.listdir(d):
        if name.startswith(TMP_PREFIX):
            try:
                os.unlink(os.path.join(d, name))
                n += 1
            except OSError:
                pass
    return n
