"""Control-plane settings and the API token."""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from ..fsutil import atomic_write


@dataclass
class Settings:
    data: str
    board_path: str
    host: str = "127.0.0.1"
    port: int = 8080
    max_upload_bytes: int = 64 << 20          # a model upload, compressed
    max_unpacked_bytes: int = 256 << 20       # what an archive may expand to
    max_members: int = 64
    activate_timeout_s: float = 120.0
    require_signed: bool = False

    @property
    def run(self) -> str:
        return os.path.join(self.data, "run")

    @property
    def socket(self) -> str:
        return os.path.join(self.run, "loop.sock")

    @property
    def telemetry(self) -> str:
        return os.path.join(self.run, "telemetry")

    @property
    def logs(self) -> str:
        return os.path.join(self.data, "logs")


def ensure_token(data: str, name: str = "token", prefix: str = "nnos_") -> tuple[str, bool]:
    """The API token (or the read-only scrape token: ``scrape_token``): made at first start
    (secrets), kept with mode 0600. Returns (token, new)."""
    path = os.path.join(data, name)
    try:
        with open(path) as f:
            token = f.read().strip()
        if token:
            return token, False
    except FileNotFoundError:
        pass
    token = prefix + secrets.token_urlsafe(32)    # never starts with '-' (a CLI would read an option)
    os.makedirs(data, exist_ok=True)
    atomic_write(path, (token + "\n").encode(), mode=0o600)
    return token, True
