"""nnos.digest.sha256: hashlib's digest, by the built-in implementation below LARGE bytes (no
OpenSSL loaded on the way to a boot's first tick) and by OpenSSL's above."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np

from nnos import digest
from tests.support.paths import ROOT


def test_the_same_digest_as_hashlib_either_side_of_large():
    rng = np.random.default_rng(0)
    for n in (0, 1, 63, 64, 1000, digest.LARGE - 1, digest.LARGE, digest.LARGE + 7):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert digest.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest(), n
        h = digest.sha256(size=n)                               # fed in parts
        for i in range(0, n, 100_000):
            h.update(memoryview(data)[i:i + 100_000])
        assert h.digest() == hashlib.sha256(data).digest(), n
    assert type(digest.sha256(b"x")) is not type(hashlib.sha256(b"x"))           # the built-in one
    assert type(digest.sha256(size=digest.LARGE)) is type(hashlib.sha256())       # OpenSSL's


def test_a_small_digest_loads_no_openssl():
    code = "import sys; from nnos.digest import sha256; sha256(b'abc').hexdigest(); print('_hashlib' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
