"""A file the device fetches itself from a URL on its local network (an update bundle served by a
laptop or a fleet server next to the robot): http or https, a host whose every address is
private, loopback or link-local, no redirects, streamed to a file under a size cap. The
connection goes to the address that was checked, so a name that resolves differently later
cannot point it elsewhere (plain http; https checks the server's certificate for the name)."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from fastapi import HTTPException


def local_address(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local


async def checked(url: str) -> tuple[str, dict]:
    """The URL to connect to and its headers, once ``url`` is known to be on the local network;
    422 naming what is wrong otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise HTTPException(422, f"not a URL: {url[:200]!r} ({e})") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPException(422, f"the URL must be http:// or https:// with a host, got {url[:200]!r}")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise HTTPException(422, f"cannot resolve {parts.hostname!r}: {e}") from e
    addrs = sorted({info[4][0] for info in infos})
    public = [a for a in addrs if not local_address(a)]
    if not addrs or public:
        raise HTTPException(422, f"{parts.hostname} is not on the local network ({', '.join(public) or 'no address'}): "
                                 "the device fetches only from private, loopback or link-local addresses")
    if parts.scheme == "https":
        return url, {}
    host = f"[{addrs[0]}]" if ":" in addrs[0] else addrs[0]
    return urlunsplit(("http", f"{host}:{port}", parts.path or "/", parts.query, "")), {"Host": parts.netloc}


async def fetch(url: str, out, limit: int, progress=lambda done, total: None, timeout_s: float = 60.0) -> int:
    """Stream ``url`` (local network only) into ``out`` (a binary file); the bytes written.
    413 past ``limit``, 502 when the server fails or answers other than 200."""
    import httpx      # here, not at the top: ≈ 10 % of the control plane's imports, on every boot
    target, headers = await checked(url)
    size = 0
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            async with client.stream("GET", target, headers=headers) as r:
                if r.status_code != 200:
                    raise HTTPException(502, f"{url[:200]} answered {r.status_code} {r.reason_phrase}, not 200")
                total = int(r.headers["content-length"]) if r.headers.get("content-length", "").isdigit() else None
                if total is not None and total > limit:
                    raise HTTPException(413, f"{url[:200]} is {total} bytes; the limit is {limit} (NNOS_MAX_BUNDLE_BYTES)")
                async for chunk in r.aiter_bytes(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(413, f"{url[:200]} sent more than the {limit}-byte limit")
                    out.write(chunk)
                    progress(size, total)
    except httpx.HTTPError as e:
        raise HTTPException(502, f"fetching {url[:200]} failed after {size} bytes: {type(e).__name__}: {e}") from e
    if size == 0:
        raise HTTPException(502, f"{url[:200]} sent nothing")
    return size
