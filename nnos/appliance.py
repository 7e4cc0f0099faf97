"""The image's PID 1 (/usr/sbin/nnos-init): the boot steps (nnos/boot/init.py), then the
supervisor in this same process — one Python start-up on the way to the first tick, not two.

Booted with ``nnos.importtime`` on the kernel command line, the supervisor is executed instead,
as a new Python that reports every import's cost on the console."""
from __future__ import annotations

import gc
import os
import sys


def main() -> None:
    from .timeline import stamp
    stamp(f"init: started as PID {os.getpid()}, root {os.environ.get('NNOS_ROOT', '?')}", sys.stdout)
    from .boot.init import main as boot
    argv, env = boot(beside=_imports)
    fresh = [sys.executable, "-m", "nnos.cli", *argv]
    if env.get("PYTHONPROFILEIMPORTTIME"):
        os.execve(sys.executable, fresh, env)
    os.environ.clear()
    os.environ.update(env)
    sys.dont_write_bytecode = True
    try:
        from .supervisor.up import main as up
        up(argv[1:])                 # `up --init` does not return: it reboots or powers off; not the CLI's parser
    except BaseException:            # noqa: BLE001 - PID 1 must not exit: the kernel would panic
        import traceback
        traceback.print_exc()
    os.execve(sys.executable, fresh, env)     # a supervisor that returned all the same: a new one


def _importtime() -> bool:
    try:
        with open("/proc/cmdline") as f:
            return "nnos.importtime" in f.read().split()
    except OSError:
        return False


def _imports() -> None:
    """The supervisor's imports and its loop's, while a child process runs the boot steps (the
    fork server finds them imported). Flags are read when used, so the environment the steps
    make (the data partition's nnos.env) can come after; OpenBLAS reads its one at numpy's
    import, so it is set first, as supervisor_env sets it."""
    if _importtime():                # each import is measured in the supervisor executed afresh
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.dont_write_bytecode = True
    gc.disable()                     # what imports make stays: a collector pass would find nothing to free
    try:
        from . import backends  # noqa: F401
        from .runtime import __main__  # noqa: F401
        from .supervisor import up  # noqa: F401
    except BaseException:            # noqa: BLE001 - said again, and handled, where it is imported for use
        import traceback
        traceback.print_exc()
    finally:
        gc.enable()
