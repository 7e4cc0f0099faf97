"""The loop's control socket: JSON requests over a Unix datagram socket in the data directory
(mode 0600: local processes of the same user only; nothing listens on the network).

The loop reads at most one request per tick without blocking and answers when the work is done
— an activation answers after admission, the swap and probation."""
from __future__ import annotations

import json
import os
import secrets
import socket
import time

from ..errors import NnosError

MAX_MSG = 65536


class ControlError(NnosError):
    pass


class ControlServer:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.setblocking(False)
        self.buf = bytearray(MAX_MSG)

    def receive(self):
        """One pending request as (message, reply address), or None. Never blocks."""
        try:
            n, addr = self.sock.recvfrom_into(self.buf)
        except (BlockingIOError, InterruptedError):
            return None
        try:
            msg = json.loads(self.buf[:n])
            if not isinstance(msg, dict) or "cmd" not in msg:
                raise ValueError("a request is a JSON object with a 'cmd'")
        except ValueError as e:
            self.reply(addr, {"ok": False, "error": f"bad request: {e}"})
            return None
        return msg, addr

    def reply(self, addr, msg: dict) -> None:
        if not addr:
            return
        try:
            self.sock.sendto(json.dumps(msg, default=str).encode()[:MAX_MSG], addr)
        except OSError:
            pass                                    # the client gave up: nothing to do

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, msg: dict, timeout: float = 30.0) -> dict:
    """Send one request to the loop at ``path`` and wait for its answer."""
    # the reply address is in Linux's abstract namespace: no file to leave behind, and no limit
    # from the run directory's length (a socket path holds 107 bytes; a deep data directory's
    # "…/run/client-<pid>-<random>.sock" went past it)
    client = f"\0nnos-client-{os.getpid()}-{secrets.token_hex(6)}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind(client)
        s.settimeout(timeout)
        try:
            s.sendto(json.dumps(msg).encode(), path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ControlError(f"nothing is listening at {path}: {e.strerror}") from e
        except OSError as e:            # a path too long for a socket, among others
            raise ControlError(f"cannot reach {path}: {e}") from e
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = s.recv(MAX_MSG)
            except socket.timeout as e:
                raise ControlError(f"the loop did not answer {msg.get('cmd')!r} within {timeout} s") from e
            reply = json.loads(data)
            if reply.get("id") == msg.get("id") or time.monotonic() > deadline:
                return reply
    finally:
        s.close()
