"""One HTTP/1.0 GET answered over stdin/stdout: what qemu's guestfwd runs for each connection the
guest makes to its file address (image/vm.py ``served``), so that a booted image fetches files
from a folder of the host without any host port or network of its own.

    python3 http_once.py FOLDER          # stdin: the request; stdout: the file (or 404)
"""
from __future__ import annotations

import os
import sys
from urllib.parse import unquote, urlsplit


def main(folder: str) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    request = stdin.readline(8192).decode("latin-1").split()
    while stdin.readline(8192).strip():                   # the headers: not needed
        pass
    name = unquote(urlsplit(request[1]).path).lstrip("/") if len(request) >= 2 else ""
    path = os.path.join(folder, os.path.basename(name))
    if len(request) < 2 or request[0] != "GET" or not name or name != os.path.basename(name) or not os.path.isfile(path):
        stdout.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return 0
    stdout.write(f"HTTP/1.0 200 OK\r\nContent-Length: {os.path.getsize(path)}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            stdout.write(chunk)
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
