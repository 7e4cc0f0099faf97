"""One HTTP GET answered over stdin/stdout: what qemu's guestfwd runs for each connection the
guest makes to its file address (image/vm.py ``served``), so that a booted image fetches files
from a folder of the host without any host port or network of its own. Files in sub-folders
are served too (a casync chunk store: NAME.castr/abcd/abcd….cacnk); nothing outside the folder.
Each answer is one line in LOG ("status bytes path"): what the guest downloaded.

    python3 http_once.py FOLDER [LOG]    # stdin: the request; stdout: the file (or 404)
"""
from __future__ import annotations

import os
import sys
from urllib.parse import unquote, urlsplit


def resolve(folder: str, target: str) -> str | None:
    """The file under ``folder`` a request target names, or None (absent, a folder, or outside)."""
    name = unquote(urlsplit(target).path).lstrip("/")
    if not name or "\0" in name:
        return None
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        return None
    return path


def main(folder: str, log: str | None = None) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    request = stdin.readline(8192).decode("latin-1").split()
    while stdin.readline(8192).strip():                   # the headers: not needed
        pass
    path = resolve(folder, request[1]) if len(request) >= 2 and request[0] == "GET" else None
    sent = 0
    if path is None:
        stdout.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    else:
        stdout.write(f"HTTP/1.0 200 OK\r\nContent-Length: {os.path.getsize(path)}\r\nConnection: close\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                stdout.write(chunk)
                sent += len(chunk)
    stdout.flush()
    if log:
        with open(log, "a") as f:                          # one short write: whole lines from each process
            f.write(f"{200 if path else 404} {sent} {request[1] if len(request) >= 2 else '-'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
