"""C types and literals for every dtype a plan may carry.

Each dtype has a storage type (what the arena holds) and a compute type (what expressions are
evaluated in): float16 is stored as ``_Float16`` and computed in float, as numpy computes its
half-precision ufuncs; every other type computes in itself. Integer arithmetic wraps (the
object is compiled with -fwrapv), as numpy's does.
"""
from __future__ import annotations

import math

import numpy as np

STORAGE = {"float16": "_Float16", "float32": "float", "float64": "double",
           "int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
           "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t", "uint64": "uint64_t",
           "bool": "uint8_t"}


def storage(dtype) -> str:
    return STORAGE[np.dtype(dtype).name]


def compute(dtype) -> str:
    name = np.dtype(dtype).name
    return "float" if name == "float16" else STORAGE[name]


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def libm(fn: str, dtype) -> str:
    """The libm function ``fn`` for ``dtype``'s compute type: expf for float, exp for double."""
    return fn if compute(dtype) == "double" else fn + "f"


def literal(value, dtype) -> str:
    """``value`` as a C constant of ``dtype``'s compute type (NaN and infinities included)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        v = float(np.asarray(value, dtype=dt))
        suffix = "" if compute(dt) == "double" else "f"
        if math.isnan(v):
            return f"__builtin_nan{suffix}(\"\")"
        if math.isinf(v):
            return f"({'-' if v < 0 else ''}__builtin_inf{suffix}())"
        return f"{v!r}{suffix}" if "e" in repr(v) or "." in repr(v) else f"{v!r}.0{suffix}"
    if dt.kind == "b":
        return "1" if bool(value) else "0"
    v = int(np.asarray(value).astype(dt))
    if dt.kind == "u":
        return f"{v}ULL" if dt.itemsize == 8 else f"{v}U"
    if dt.itemsize == 8:
        return "(-9223372036854775807LL - 1)" if v == -2 ** 63 else f"{v}LL"
    return f"({v})" if v != -2 ** 31 else "(-2147483647 - 1)"


def lowest(dtype) -> str:
    """The identity of max: -inf for floats, the smallest integer, false for bool."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return literal(-np.inf, dt)
    if dt.kind == "b":
        return "0"
    return literal(np.iinfo(dt).min, dt)


def highest(dtype) -> str:
    """The identity of min: inf for floats, the largest integer, true for bool."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return literal(np.inf, dt)
    if dt.kind == "b":
        return "1"
    return literal(np.iinfo(dt).max, dt)
