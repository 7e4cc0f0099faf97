"""Config put on the boot partition before a boot: the one partition any laptop can write (FAT,
labelled NNOSBOOT). A builder flashes the image, opens the card's boot partition and puts any of
``board.toml``, ``network.toml``, ``nnos.env`` and ``hostname`` in its ``nnos/config/`` folder,
and the API token it chose (``token``; ``scrape_token``: the fleet's read-only one for
Prometheus), so that it knows them without reading the device's ext4 data partition
(`image/bootconfig.py` does the same to an image file or a card, without mounting it).

At every boot, init brings each of those files whose content is not the one it last found there
into the data partition (config into /data/config, where the device keeps its own; the tokens
into /data/nnos, mode 0600, never shown): checked first as its reader will read it, then written
atomically. A file that fails its check is refused, named with the reason on the console and in
the status, and the config it would have replaced is kept. A file is taken once per content, so
config changed since (over the API) stays until the file on the boot partition changes again; a
file removed from there leaves the device's copy alone. What happened to each file is kept beside
the config (RECORD), and the control plane's status shows it."""
from __future__ import annotations

import hashlib
import json
import os
import re

RECORD = "boot-config.json"         # in the config folder: per file, the content last seen and what became of it
MAX_BYTES = 256 * 1024              # as a board PUT over the API
IGNORED = {"readme.txt"}            # the image's note on this folder
HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*", re.IGNORECASE)
TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{32,512}")     # what secrets.token_urlsafe(32) makes: 43 of them
SECRETS = {"token": "nnos_", "scrape_token": "nnos_scrape_"}    # file → the prefix the control plane gives it


class BootConfigError(Exception):
    pass


def check_board(path: str) -> None:
    from nnos_hardware.board import load_board
    from nnos_hardware.errors import ConfigError
    try:
        load_board(path)
    except ConfigError as e:
        raise BootConfigError(str(e)) from e


def check_network(path: str) -> None:
    from .network import NetworkConfigError, load_config
    try:
        load_config(path)
    except NetworkConfigError as e:
        raise BootConfigError(str(e)) from e


def check_env(path: str) -> None:
    """Every line a flag `nnos flags` lists with a valid value: a file meant for a device nobody
    watches is taken whole or not at all (the data partition's own file is read line by line)."""
    from .. import flags
    _, problems = flags.read_env_file(path)
    if problems:
        raise BootConfigError("; ".join(problems))


def check_hostname(path: str) -> None:
    with open(path, "rb") as f:
        name = f.read().decode(errors="replace").strip()
    if len(name) > 253 or not HOSTNAME.fullmatch(name):
        raise BootConfigError(f"{path}: {name[:80]!r} is not a host name (letters, digits and '-', "
                              f"in dot-separated labels of at most 63)")


def check_token(path: str) -> None:
    """An API or scrape token as the control plane makes them: its prefix, then at least 32
    URL-safe characters (192 bits). Never quoted back: the console and the status are not secret."""
    name = os.path.basename(path).removeprefix(".candidate-")
    prefix = SECRETS[name]
    with open(path, "rb") as f:
        token = f.read().decode(errors="replace").strip()
    if not token.startswith(prefix) or not TOKEN_CHARS.fullmatch(token[len(prefix):]):
        raise BootConfigError(f"{path}: not a {name.replace('_', ' ')} ({prefix} then at least 32 of A-Z a-z 0-9 - _, "
                              f"one line; `python3 image/bootconfig.py DISK new-token` makes one)")
    if name == "token" and token.startswith(SECRETS["scrape_token"]):
        raise BootConfigError(f"{path}: a scrape token, not an API token (the scrape token goes in scrape_token)")


CHECKS = {"board.toml": check_board, "network.toml": check_network, "nnos.env": check_env,
          "hostname": check_hostname, "token": check_token, "scrape_token": check_token}


def check(name: str, data: bytes, folder: str, shown_as: str) -> None:
    """``data`` as the file ``name`` in ``folder``, checked by its reader (relative paths in a board
    resolve where it will live); raises BootConfigError naming ``shown_as``."""
    if name not in CHECKS:
        raise BootConfigError(f"{shown_as}: not a config file nnos reads; expected one of {', '.join(CHECKS)}")
    if len(data) > MAX_BYTES:
        raise BootConfigError(f"{shown_as}: {len(data)} bytes; a config file is at most {MAX_BYTES}")
    candidate = os.path.join(folder, f".candidate-{name}")
    try:
        with open(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)                 # 0600: it may be a token
        CHECKS[name](candidate)
    except BootConfigError as e:
        raise BootConfigError(str(e).replace(candidate, shown_as)) from e
    except (ValueError, OSError) as e:       # e.g. UTF-16 text, as some editors save it
        raise BootConfigError(f"{shown_as}: cannot be read as UTF-8 text ({type(e).__name__}: "
                              f"{str(e).replace(candidate, shown_as)}); save it as UTF-8") from e
    finally:
        if os.path.exists(candidate):
            os.unlink(candidate)


def read_record(config: str) -> dict:
    try:
        with open(os.path.join(config, RECORD)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    return {name: r for name, r in record.items() if isinstance(r, dict)}    # a damaged entry: seen anew


def take(source: str, config: str, say, state: str | None = None) -> dict:
    """Bring the changed files of ``source`` into ``config`` (the tokens into ``state``, the
    control plane's data folder); returns the record (file → sha256, result: imported | refused
    | unknown, why). No ``source`` folder: nothing happens."""
    try:
        names = sorted(os.listdir(source))
    except OSError:
        return {}
    from ..fsutil import atomic_write
    record = read_record(config)
    kept = dict(record)
    for name in names:
        path = os.path.join(source, name)
        if name.lower() in IGNORED or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        digest = hashlib.sha256(data).hexdigest()
        seen = record.get(name, {})
        if seen.get("sha256") == digest:
            if seen.get("result") != "imported":
                say(f"config: {path} is still refused: {seen.get('why')}")
            continue
        record[name] = _take_one(name, data, path, config, say, state or config)
        record[name]["sha256"] = digest
    if record != kept:
        atomic_write(os.path.join(config, RECORD), json.dumps(record, indent=1, sort_keys=True).encode())
    return record


def _take_one(name: str, data: bytes, path: str, config: str, say, state: str) -> dict:
    from ..fsutil import atomic_write
    try:
        check(name, data, config, path)
    except BootConfigError as e:
        result = "unknown" if name not in CHECKS else "refused"
        say(f"config: {path} refused: {e}; the device's own {name if name in CHECKS else 'config'} is kept")
        return {"result": result, "why": str(e)}
    if name in SECRETS:
        os.makedirs(state, exist_ok=True)
        atomic_write(os.path.join(state, name), data.strip() + b"\n", mode=0o600)
    else:
        atomic_write(os.path.join(config, name), data)
    say(f"config: {name} imported from the boot partition ({path})")
    return {"result": "imported", "why": None}
