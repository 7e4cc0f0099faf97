"""Crash-safe file writes: a temp file in the same directory, fsync, rename over the target,
fsync the directory. A power cut at any instant leaves the old file or the new one, whole."""
from __future__ import annotations

import itertools
import os
import re
import time

TMP_PREFIX = ".tmp-"


def temp_prefix() -> str:
    """Temp files carry their writer's pid, so a cleaner can tell an abandoned one (its writer
    is gone) from one being written right now by another process."""
    return f"{TMP_PREFIX}{os.getpid()}-"


_names = itertools.count()


def _create_temp(d: str) -> tuple[int, str]:
    """A new file of this process's own in ``d`` (as tempfile.mkstemp, whose import — shutil,
    random, bz2, lzma — is 0.1 s of an emulated boot: RESULTS.md, issue 21)."""
    while True:
        tmp = os.path.join(d, f"{temp_prefix()}{next(_names)}-{os.urandom(4).hex()}")
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp(d)
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


LOG_MODE = 0o640
_SECRET = re.compile(rb"nnos_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def redact(line: bytes) -> bytes:
    """Whatever looks like an nnos token (nnos_ + 43 url-safe characters) never reaches a log."""
    return _SECRET.sub(b"nnos_[redacted]", line)


def append_rotating(path: str, data: bytes, max_bytes: int) -> None:
    """Append to a log-like file (mode 0640: logs are not for every user); past ``max_bytes``
    it becomes PATH.1 (one older kept), so it never grows without bound. Raises OSError."""
    if os.path.exists(path) and os.path.getsize(path) > max_bytes:
        os.replace(path, path + ".1")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    try:
        if os.fstat(fd).st_mode & 0o7777 & ~LOG_MODE:        # made by an older nnos, or another umask
            os.fchmod(fd, LOG_MODE)
        os.write(fd, data)
    finally:
        os.close(fd)


def fsync_path(path: str) -> None:
    """Flush a file (one another process wrote: a compiler's output) or a directory to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(d: str) -> None:
    fsync_path(d)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(name: str, prefix: str, path: str, unnamed_age_s: float = 600.0) -> bool:
    """For a leftover named PREFIX<pid>-…: its writer is no longer alive. A name without a pid
    (an older nnos) counts as abandoned once it is older than ``unnamed_age_s``."""
    pid = name[len(prefix):].split("-", 1)[0]
    if pid.isdigit():
        return int(pid) != os.getpid() and not pid_alive(int(pid))
    try:
        return time.time() - os.lstat(path).st_mtime > unnamed_age_s
    except FileNotFoundError:
        return False


RUN_LEFTOVERS = ("upload-", "intake-", "client-", "proposal-")


def remove_run_leftovers(run: str) -> int:
    """What killed processes left in DATA/run (upload files, intake directories, request
    sockets) whose owner is gone."""
    n = 0
    try:
        names = os.listdir(run)
    except FileNotFoundError:
        return 0
    for name in names:
        prefix = next((p for p in RUN_LEFTOVERS if name.startswith(p)), None)
        path = os.path.join(run, name)
        if prefix is None or not owner_gone(name, prefix, path):
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                import shutil                          # (not at every start: ≈ 30 ms of an emulated boot)
                shutil.rmtree(path)
            else:
                os.unlink(path)
            n += 1
        except OSError:
            pass
    return n


def remove_stale_temps(d: str) -> int:
    """Temp files a crash left behind — only those whose writer is gone, never a file another
    process is writing now (nor the real files: those were renamed into place)."""
    n = 0
    for name in os.listdir(d):
        path = os.path.join(d, name)
        if name.startswith(TMP_PREFIX) and owner_gone(name, TMP_PREFIX, path):
            try:
                os.unlink(path)
                n += 1
            except OSError:
                pass
    return n
