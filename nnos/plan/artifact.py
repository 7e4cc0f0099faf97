"""The plan file: one self-describing, checksummed file. Loading parses JSON and raw arrays
only; nothing in it is executed (no pickle).

    offset 0   8 bytes   magic b"NNOSPLAN"
               4 bytes   plan format version, little-endian u32
               4 bytes   reserved (0)
               8 bytes   header length H, little-endian u64
    24         H bytes   header: UTF-8 JSON (graph, schedule, memory plan, metadata, weight table)
               padding   zeros to a multiple of 64
               blob      weights, each at a 64-byte aligned offset given in the weight table
    end - 32   32 bytes  sha256 of every byte before it
"""
from __future__ import annotations

import binascii
import json
import struct

import numpy as np

from ..digest import sha256
from ..errors import PlanFormatError
from ..ir import SUPPORTED_DTYPES, aligned_empty, contiguous
from ..limits import MAX_HEADER_BYTES, tensor_problem

MAGIC = b"NNOSPLAN"
FORMAT_VERSION = 2        # 2: no bias-row Gemms, no constant cells in the memory plan
_PREFIX = struct.Struct("<8sIIQ")
DIGEST_BYTES = 32


def sniff(head: bytes) -> str:
    """What an uploaded file is, from its first 512 bytes: "plan", "zip", "tar" (gzip too) or
    "onnx" (anything else: the ONNX parser is the judge)."""
    if head.startswith(MAGIC):
        return "plan"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):           # gzip: a .tar.gz / .tgz (tarfile reads it as a stream)
        return "tar"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    return "onnx"


def format_version(head: bytes) -> int | None:
    """The plan format version in a plan file's first bytes (None: not a plan)."""
    if len(head) < _PREFIX.size or not head.startswith(MAGIC):
        return None
    return _PREFIX.unpack_from(head, 0)[1]


def _align(n: int, a: int = 64) -> int:
    return (n + a - 1) // a * a


def encode_value(v):
    """Attributes to JSON; arrays become tagged base64."""
    import base64
    if isinstance(v, np.ndarray):
        return {"__ndarray__": v.dtype.name, "shape": list(v.shape),
                "data": base64.b64encode(contiguous(v).tobytes()).decode()}
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [encode_value(x) for x in v]
    if isinstance(v, dict):
        return {k: encode_value(x) for k, x in v.items()}
    return v


def decode_value(v):
    if isinstance(v, dict) and "__ndarray__" in v:
        dt = _dtype(v["__ndarray__"])
        shape = _shape(v.get("shape"), "an embedded array")
        try:
            import base64
            data = base64.b64decode(v["data"], validate=True)
            return np.frombuffer(data, dtype=dt).reshape(shape).copy()
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise PlanFormatError(f"an embedded array is malformed ({type(e).__name__}: {e})") from e
    if isinstance(v, list):
        return [decode_value(x) for x in v]
    if isinstance(v, dict):
        return {k: decode_value(x) for k, x in v.items()}
    return v


def _shape(value, what: str) -> tuple[int, ...]:
    """A shape from the header, checked before anything of that size is allocated."""
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise PlanFormatError(f"{what} has shape {str(value)[:80]}, expected a list of integers")
    problem = tensor_problem(value)
    if problem:
        raise PlanFormatError(f"{what}: {problem}")
    return tuple(value)


def _dtype(name: str) -> np.dtype:
    try:
        dt = np.dtype(name)
    except (TypeError, ValueError) as e:
        raise PlanFormatError(f"unknown dtype {name!r} in plan") from e
    if dt not in SUPPORTED_DTYPES:
        raise PlanFormatError(f"dtype {name!r} in plan is not supported")
    return dt


def write(header: dict, weights: dict[str, np.ndarray]) -> bytes:
    table, offset = {}, 0
    for name, arr in weights.items():
        table[name] = {"dtype": arr.dtype.name, "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes}
        offset = _align(offset + arr.nbytes)
    header = dict(header, weights=table)
    head = json.dumps(encode_value(header), separators=(",", ":")).encode()
    start = _align(_PREFIX.size + len(head))
    buf = bytearray(start + offset)
    _PREFIX.pack_into(buf, 0, MAGIC, FORMAT_VERSION, 0, len(head))
    buf[_PREFIX.size:_PREFIX.size + len(head)] = head
    for name, arr in weights.items():
        o = start + table[name]["offset"]
        buf[o:o + arr.nbytes] = contiguous(arr).tobytes()
    buf += sha256(buf).digest()
    return bytes(buf)


def read(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    if len(data) < _PREFIX.size + DIGEST_BYTES:
        raise PlanFormatError(f"file is {len(data)} bytes: too short to be an nnos plan (truncated?)")
    magic, version, _, hlen = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise PlanFormatError(f"not an nnos plan: starts with {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise PlanFormatError(f"plan format version {version}, this nnos reads version {FORMAT_VERSION}: "
                              "recompile the plan from its ONNX model")
    body, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    if sha256(body).digest() != digest:
        raise PlanFormatError("checksum mismatch: the plan file is truncated or was modified")
    start = _align(_PREFIX.size + hlen)
    if start > len(body) or hlen > MAX_HEADER_BYTES:
        raise PlanFormatError(f"header length {hlen} runs past the end of the file or over {MAX_HEADER_BYTES} bytes")
    try:
        header = decode_value(json.loads(body[_PREFIX.size:_PREFIX.size + hlen].decode()))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlanFormatError(f"plan header is not valid JSON: {e}") from e
    except RecursionError as e:
        raise PlanFormatError("plan header is nested too deeply") from e
    if not isinstance(header, dict) or not isinstance(header.get("weights", {}), dict):
        raise PlanFormatError("plan header must be a JSON object whose 'weights' is an object (name → entry)")
    blob = np.frombuffer(body, dtype=np.uint8, offset=start)
    return header, {name: _weight(name, w, blob) for name, w in header.get("weights", {}).items()}


def _weight(name: str, w, blob: np.ndarray) -> np.ndarray:
    if not isinstance(w, dict):
        raise PlanFormatError(f"weight {name!r}: its entry must be an object, got {type(w).__name__}")
    try:
        dt = _dtype(w["dtype"])
        shape = _shape(w["shape"], f"weight {name!r}")
        o, declared = int(w["offset"]), int(w["nbytes"])
    except (KeyError, TypeError, ValueError) as e:
        raise PlanFormatError(f"weight {name!r}: malformed entry ({type(e).__name__}: {e})") from e
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if n != declared or o < 0 or o + n > blob.size:
        raise PlanFormatError(f"weight {name!r} ({n} bytes at {o}) lies outside the weight blob")
    arr = aligned_empty(shape, dt)                       # the backends' vector loads: whole cache lines
    arr.reshape(-1).view(np.uint8)[:] = blob[o:o + n]
    return arr
