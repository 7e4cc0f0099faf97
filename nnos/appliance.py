"""The image's PID 1 (/usr/sbin/nnos-init): the boot steps (nnos/boot/init.py), then the
supervisor in this same process — one Python start-up on the way to the first tick, not two.

Booted with ``nnos.importtime`` on the kernel command line, the supervisor is executed instead,
as a new Python that reports every import's cost on the console.

``python3 -m nnos.appliance record PATH BOARD`` (image step 50): the code PID 1's imports
generate, recorded for it (nnos/gencache.py)."""
from __future__ import annotations

import gc
import importlib
import os
import sys

GENCACHE = "/usr/lib/nnos/gencache"     # image step 50: the methods dataclasses generate on the way, compiled


def main() -> None:
    from .timeline import stamp
    stamp(f"init: started as PID {os.getpid()}, root {os.environ.get('NNOS_ROOT', '?')}", sys.stdout)
    cache, problem = _gencache(GENCACHE)
    from .boot.init import main as boot
    argv, env = boot(beside=_imports)
    stamp(f"init: generated code: {problem}; compiled {cache.misses}" if problem else
          f"init: generated code: {cache.hits} from the image's record, {cache.misses} compiled", sys.stdout)
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


def _gencache(path: str):
    """dataclasses' methods from the image's record (nnos/gencache.py): (the cache, why not or None)."""
    from . import gencache
    try:
        return gencache.install(gencache.read(path)), None
    except gencache.GenCacheError as e:
        return gencache.install(), str(e)


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
        for name in BOOT_IMPORTS:
            importlib.import_module(name)
    except BaseException:            # noqa: BLE001 - said again, and handled, where it is imported for use
        import traceback
        traceback.print_exc()
    finally:
        gc.enable()


BOOT_IMPORTS = ("nnos.backends", "nnos.runtime.__main__", "nnos.supervisor.up")


def record(path: str, board_path: str) -> int:
    """What PID 1 and its fork server import on the way to the first tick with ``board_path``
    (the image's default board), with the code dataclasses generate for it recorded in ``path``."""
    import tempfile

    from . import gencache
    from .fsutil import atomic_write
    cache = gencache.install(recording=True)
    for name in BOOT_IMPORTS:
        importlib.import_module(name)
    from nnos_hardware.board import load_board

    from .supervisor.forkserver import title_setter
    from .supervisor.table import Context, table
    from .supervisor.up import forked_modules
    with tempfile.TemporaryDirectory() as data:
        ctx = Context(board_path, data, load_board(board_path), os.path.join(data, "run"))
        preload, _, drivers = forked_modules(ctx, table(ctx))
    for name in (*preload, *drivers):
        try:
            importlib.import_module(name)
        except ImportError as e:
            print(f"record: {name} not imported ({e}): the fork server does without it too", file=sys.stderr)
    title_setter()
    atomic_write(path, cache.to_bytes())
    print(f"record: {len(cache.used)} generated methods of PID 1's imports in {path} "
          f"({os.path.getsize(path)} bytes)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "record":
        sys.exit("usage: python3 -m nnos.appliance record PATH BOARD")
    sys.exit(record(sys.argv[2], sys.argv[3]))
