"""The program of an object built ahead of time (the image's default model, issue 21): written
beside the object when it is built into what becomes a prebuilt directory, it lets a boot load
that object without generating the plan's C again — no code generator imported, no compiler
run for its identity, no source hashed.

A record is ``program-<plan digest>-<target>.json`` (the object's key and facts, the vector
width, the workspace size and the w[] table: each entry a plan weight by name or a repacked
array in the ``.bin`` beside it, with the blob's sha256). It is used only from a prebuilt
directory (read-only, written by the same build of nnos that reads it), only for a plan read
from a file (its digest says which) and only for a named target; anything that does not match
— another plan, target or vector width, a damaged record or blob, an object that does not carry
the key — is passed over, and the C is generated as before (which finds the same object)."""
from __future__ import annotations

import json
import os

import numpy as np

from ...digest import sha256
from ...fsutil import atomic_write
from ..base import aligned_zeros
from .toolchain import object_path, prebuilt_dirs

VERSION = 1


def _name(digest: str, target: str) -> str:
    return f"program-{digest[:32]}-{target}"


def save(plan, prog, facts: dict, directory: str) -> str | None:
    """Write the record of ``prog`` (the Program the object of ``facts`` was generated from) into
    ``directory``; its path, or None when ``plan`` was not read from a file or the target is
    "native" (this CPU's features are part of the key: not a record another machine could use)."""
    digest = getattr(plan, "digest", None)
    if digest is None or facts["target"] == "native":
        return None
    names = {id(a): k for k, a in plan.graph.consts.items()}
    table, blob = [], bytearray()
    for a in prog.consts:
        if id(a) in names:
            table.append({"weight": names[id(a)]})
            continue
        off = -(-len(blob) // 64) * 64
        blob += bytes(off - len(blob)) + a.tobytes()
        table.append({"offset": off, "dtype": a.dtype.str, "shape": list(a.shape)})
    base = os.path.join(directory, _name(digest, facts["target"]))
    rec = {"version": VERSION, "plan": digest, "steps": len(plan.graph.nodes), "arena": plan.memory.arena_bytes,
           "vw": prog.vw, "workspace": prog.workspace, "consts": table, "blob": sha256(blob).hexdigest(),
           "facts": {k: facts[k] for k in ("compiler", "flags", "key", "target", "source_lines") if k in facts}}
    atomic_write(base + ".bin", bytes(blob))            # the blob first: a record never names a missing one
    atomic_write(base + ".json", json.dumps(rec).encode())
    return base + ".json"


def find(plan, target: str, vw: int) -> tuple[dict, str, list[np.ndarray]] | None:
    """(the record, its object's path, the w[] table) for ``plan`` on ``target`` at ``vw``
    floats a vector, from the first prebuilt directory that has a usable one; else None."""
    digest = getattr(plan, "digest", None)
    if digest is None or target == "native":
        return None
    for d in prebuilt_dirs():
        found = _load(os.path.join(d, _name(digest, target)), plan, digest, vw)
        if found is not None:
            rec, consts = found
            return rec, object_path(rec["facts"]["key"], d), consts
    return None


def _load(base: str, plan, digest: str, vw: int) -> tuple[dict, list[np.ndarray]] | None:
    try:
        with open(base + ".json") as f:
            rec = json.load(f)
        with open(base + ".bin", "rb") as f:
            blob = f.read()
    except (OSError, ValueError):
        return None
    try:
        same = (rec["version"] == VERSION and rec["plan"] == digest and rec["vw"] == vw
                and rec["steps"] == len(plan.graph.nodes) and rec["arena"] == plan.memory.arena_bytes
                and rec["blob"] == sha256(blob).hexdigest())
        if not same:
            return None
        aligned = aligned_zeros(len(blob))            # repacked weights are read by aligned vector loads
        aligned[:] = np.frombuffer(blob, np.uint8)
        return rec, [_const(e, plan, aligned) for e in rec["consts"]]
    except (KeyError, TypeError, ValueError):
        return None


def _const(entry: dict, plan, blob: np.ndarray) -> np.ndarray:
    if "weight" in entry:
        return plan.graph.consts[entry["weight"]]
    dt = np.dtype(entry["dtype"])
    nbytes = int(np.prod(entry["shape"], dtype=np.int64)) * dt.itemsize
    return blob[entry["offset"]:entry["offset"] + nbytes].view(dt).reshape(entry["shape"])
