"""Put config on an nnos disk's boot partition before it boots, without mounting it (mtools):
an image file or a flashed card. The device imports what it finds there into its data partition
at its next boot (nnos/boot/bootconfig.py). Each file is checked here as the device will check
it, so a mistake shows now rather than on a console nobody watches.

    python3 image/bootconfig.py DISK                           # list nnos/config/ on the boot partition
    python3 image/bootconfig.py DISK put board.toml ./my-arm.toml
    python3 image/bootconfig.py DISK put network.toml ./static.toml
    python3 image/bootconfig.py DISK cat board.toml
    python3 image/bootconfig.py DISK rm board.toml
    python3 image/bootconfig.py DISK new-token [token|scrape_token]   # made here, put there, printed

Files: board.toml, network.toml, nnos.env, hostname; token and scrape_token, the device's API and
read-only scrape tokens, known before it boots (docs in image/README.md). A card can also be
written by hand: mount its NNOSBOOT partition and copy the files into nnos/config/.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))            # the checks are the device's own
from datafs import DataFsError, partition  # noqa: E402

from nnos.boot.bootconfig import CHECKS, SECRETS, BootConfigError, check  # noqa: E402

FOLDER = "::/nnos/config"
ARGS = {"put": (4,), "cat": (3,), "rm": (3,), "new-token": (2, 3)}   # each command's argument count, DISK included


class BootConfigToolError(Exception):
    pass


def _image(disk: str) -> str:
    return f"{disk}@@{partition(disk, 'boot')['start']}"


def _mtools(*cmd: str, disk: str) -> bytes:
    r = subprocess.run([cmd[0], "-i", _image(disk), *cmd[1:]], capture_output=True)
    if r.returncode != 0:
        raise BootConfigToolError(f"{disk}: {' '.join(cmd)}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def listdir(disk: str) -> list[str]:
    out = _mtools("mdir", "-b", FOLDER, disk=disk).decode(errors="replace")
    return sorted(os.path.basename(line.strip().rstrip("/")) for line in out.splitlines() if line.strip())


def read(disk: str, name: str) -> bytes:
    return _mtools("mtype", f"{FOLDER}/{name}", disk=disk)


def check_file(name: str, data: bytes) -> None:
    """Raises BootConfigToolError when the device would refuse ``data`` as ``nnos/config/NAME``."""
    if name not in CHECKS:
        raise BootConfigToolError(f"{name}: not a config file nnos reads; expected one of {', '.join(CHECKS)}")
    with tempfile.TemporaryDirectory() as d:
        try:
            check(name, data, d, name)
        except BootConfigError as e:
            raise BootConfigToolError(f"{name} would be refused by the device: {e}") from e
        except ImportError as e:                  # a board is read by nnos_hardware (numpy, ...)
            raise BootConfigToolError(f"{name} cannot be checked by this Python ({e}): run this with "
                                      f"nnos's own (.venv/bin/python, made by ./build.sh setup)") from e


def write(disk: str, name: str, data: bytes, checked: bool = True) -> None:
    """``data`` as ``nnos/config/NAME`` (replaced if there), checked first as the device will."""
    if name not in CHECKS:
        raise BootConfigToolError(f"{name}: not a config file nnos reads; expected one of {', '.join(CHECKS)}")
    if checked:
        check_file(name, data)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(data)
        if _missing_folder(disk):
            _mtools("mmd", FOLDER, disk=disk)
        _mtools("mcopy", "-o", path, f"{FOLDER}/{name}", disk=disk)


def _missing_folder(disk: str) -> bool:
    """Images built before the folder existed lack it."""
    r = subprocess.run(["mdir", "-b", "-i", _image(disk), FOLDER], capture_output=True)
    return r.returncode != 0


def new_token(disk: str, name: str = "token") -> str:
    """A fresh token as the control plane makes them, put on the boot partition; returned."""
    if name not in SECRETS:
        raise BootConfigToolError(f"{name}: not a token file; expected one of {', '.join(SECRETS)}")
    token = SECRETS[name] + secrets.token_urlsafe(32)
    write(disk, name, (token + "\n").encode())
    return token


def remove(disk: str, name: str) -> None:
    _mtools("mdel", f"{FOLDER}/{name}", disk=disk)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (len(argv) > 1 and len(argv) not in ARGS.get(argv[1], ())):
        print(__doc__)
        return 2
    disk = argv[0]
    try:
        if len(argv) == 1:
            print("\n".join(listdir(disk)))
        elif argv[1] == "put":
            with open(argv[3], "rb") as f:
                write(disk, argv[2], f.read())
            print(f"{argv[2]}: on {disk}'s boot partition; imported at its next boot")
        elif argv[1] == "new-token":
            print(new_token(disk, *argv[2:]))
        elif argv[1] == "cat":
            sys.stdout.buffer.write(read(disk, argv[2]))
        else:
            remove(disk, argv[2])
    except (BootConfigToolError, DataFsError, OSError) as e:
        print(f"bootconfig: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
