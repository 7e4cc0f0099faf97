"""The code Python generates at import, compiled once: the methods `dataclasses` writes for each
class (``__init__``, ``__repr__``, ``__eq__``, a frozen class's ``__setattr__``, …) are source
text it compiles with ``exec`` every time the class is created — on the appliance's way to its
first tick, 24 classes, 96 compilations: ≈ 30 % of nnos's own import time, most of a third of a
second of an emulated boot (benchmarks/RESULTS.md, issue 21) — and each named tuple's
``__new__`` is a lambda `collections` compiles with ``eval`` (13 on the way, numpy's and the
standard library's).

The image records those code objects once, with its own Python (image step 50: ``python3 -m
nnos.appliance record``), and PID 1 installs the record before it imports anything else: a
text seen when recording runs from the record, any other compiles as before. Entries are keyed
by the exact text, so a hit is the very code that text compiles to. The file is marshal's (what
.pyc files hold) with the interpreter's magic number in front, written by nnos at image build
into the read-only root and never from an upload; one from another Python, or unreadable, is
ignored and said so.
"""
from __future__ import annotations

import builtins
import marshal

import _frozen_importlib_external

from .errors import NnosError

MAGIC = _frozen_importlib_external.MAGIC_NUMBER      # the bytecode format: a .pyc's first 4 bytes


class GenCacheError(NnosError):
    pass


class CodeCache:
    """``exec`` for ``dataclasses`` and ``eval`` for ``collections``: (mode, source text) → its
    code object, from the record when there."""

    def __init__(self, codes: dict | None = None, recording: bool = False):
        self.codes = dict(codes or {})
        self.recording = recording
        self.used: dict[tuple[str, str], object] = {}
        self.hits = self.misses = 0

    def exec(self, source, globals=None, locals=None):  # noqa: A002 - exec's own signature
        return builtins.exec(self._code(source, "exec"), globals, locals)

    def eval(self, source, globals=None, locals=None):  # noqa: A002 - eval's own signature
        return builtins.eval(self._code(source, "eval"), globals, locals)

    def _code(self, source, mode: str):
        if not isinstance(source, str):
            return source
        key = (mode, source)
        code = self.codes.get(key)
        if code is None:
            self.misses += 1
            code = compile(source, "<string>", mode)
        else:
            self.hits += 1
        if self.recording:
            self.used[key] = code
        return code

    def to_bytes(self) -> bytes:
        return MAGIC + marshal.dumps(self.used)


def read(path: str) -> dict:
    """The record at ``path``: {(mode, source text): code}."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise GenCacheError(f"generated-code record {path}: {e.strerror or e}") from e
    if data[:len(MAGIC)] != MAGIC:
        raise GenCacheError(f"generated-code record {path}: made by another Python (magic {data[:4].hex()}, "
                            f"this one {MAGIC.hex()})")
    try:
        codes = marshal.loads(data[len(MAGIC):])
    except (EOFError, ValueError, TypeError) as e:
        raise GenCacheError(f"generated-code record {path}: unreadable ({e})") from e
    if not isinstance(codes, dict) or not all(_entry(k, v) for k, v in codes.items()):
        raise GenCacheError(f"generated-code record {path}: expected a table of (mode, source text) → code, "
                            f"got {type(codes).__name__}")
    return codes


def _entry(key, code) -> bool:
    return (isinstance(key, tuple) and len(key) == 2 and key[0] in ("exec", "eval") and isinstance(key[1], str)
            and hasattr(code, "co_code"))


def install(codes: dict | None = None, recording: bool = False) -> CodeCache:
    """From now on in this process, dataclasses and named tuples compile through a ``CodeCache``
    of ``codes`` (a module global shadows the builtin its module calls)."""
    import collections
    import dataclasses
    cache = CodeCache(codes, recording)
    dataclasses.exec = cache.exec
    collections.eval = cache.eval
    return cache
