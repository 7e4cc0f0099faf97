"""The loop's control socket: JSON requests over a Unix datagram socket in the data directory
(mode 0600: local processes of the same user only; nothing listens on the network).

The loop reads at most one request per tick without blocking and answers when the work is done
— an activation answers after admission, the swap and probation."""
from __future__ import annotations

import json
import os
import socket
import time

from ..errors import NnosError

MAX_MSG = 65536
RESTART_CHECK_S = 0.5                # how often a waiting client checks that its server is the same one


class ControlError(NnosError):
    pass


class ControlServer:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # bound under a short temporary name, then renamed over the path: never a moment without
        # a socket there, and always a new file (a waiting client tells a restarted server by it)
        temp = os.path.join(os.path.dirname(path), f".{os.getpid():x}")
        if os.path.exists(temp):
            os.unlink(temp)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(temp)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
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


def _server_id(path: str) -> tuple[int, int] | None:
    """The socket file's identity: a restarted server binds a new one at the same path."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def request(path: str, msg: dict, timeout: float = 30.0) -> dict:
    """Send one request to the loop at ``path`` and wait for its answer. A server that is
    replaced while it works on it (the loop killed by its watchdog and restarted) never answers:
    that is said as soon as its socket is gone or another one is bound there, not after the
    whole timeout."""
    # the reply address is in Linux's abstract namespace: no file to leave behind, and no limit
    # from the run directory's length (a socket path holds 107 bytes; a deep data directory's
    # "…/run/client-<pid>-<random>.sock" went past it)
    client = f"\0nnos-client-{os.getpid()}-{os.urandom(6).hex()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind(client)
        server = _server_id(path)
        try:
            s.sendto(json.dumps(msg).encode(), path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ControlError(f"nothing is listening at {path}: {e.strerror}") from e
        except OSError as e:            # a path too long for a socket, among others
            raise ControlError(f"cannot reach {path}: {e}") from e
        return _answer(s, path, server, msg, timeout)
    finally:
        s.close()


def _answer(s: socket.socket, path: str, server, msg: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ControlError(f"the loop did not answer {msg.get('cmd')!r} within {timeout} s")
        s.settimeout(min(left, RESTART_CHECK_S))
        try:
            data = s.recv(MAX_MSG)
        except socket.timeout:
            if _server_id(path) != server:          # closed, or another one bound in its place
                raise ControlError(f"the loop stopped or restarted before it answered {msg.get('cmd')!r} "
                                   "(the request was lost with it; ask again)") from None
            continue
        reply = json.loads(data)
        if reply.get("id") == msg.get("id"):
            return reply
