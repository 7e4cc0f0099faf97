"""sha256, as hashlib computes it, without loading OpenSSL for small inputs: hashlib's import
loads libcrypto (0.17 s of an emulated boot: benchmarks/RESULTS.md, issue 21) while the
interpreter's own sha256 is built in; inputs of LARGE bytes or more go to OpenSSL's, several
times faster on them (SHA extensions)."""
from __future__ import annotations

LARGE = 4 << 20


def sha256(data: bytes | memoryview = b"", size: int | None = None):
    """A sha256 object holding ``data``; ``size``: how many bytes it will be given in all (when
    more come by ``update``), which picks the implementation."""
    if (len(data) if size is None else size) < LARGE:
        try:
            from _sha256 import sha256 as builtin          # Python 3.11
        except ImportError:
            try:
                from _sha2 import sha256 as builtin        # 3.12 and later
            except ImportError:
                builtin = None
        if builtin is not None:
            return builtin(data)
    import hashlib
    return hashlib.sha256(data)
