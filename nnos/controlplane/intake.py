"""From uploaded bytes to a stored, verified model: detect what was sent (an .onnx file, an
.onnx with its external data as a zip or tar, or a compiled plan), unpack it safely, compile,
verify on sample inputs, measure on this device, check it against the board, store it.

Nothing uploaded is unpickled or evaluated: archives are read as data with size, count and
path checks; ONNX goes through the onnx parser; plans through the plan-file reader.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time
import zipfile


from nnos_hardware.errors import ConfigError

from .. import flags
from ..errors import NnosError
from ..backends import verify
from ..backends.bench import measure
from ..runtime.slots import admit
from ..timing import period_ns
from ..plan import Plan
from ..plan.artifact import sniff as detect


class IntakeError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _safe_name(name: str) -> str:
    norm = os.path.normpath(name)
    if not name or name.startswith(("/", "\\")) or norm.startswith("..") or os.path.isabs(norm) or "\x00" in name:
        raise IntakeError(400, f"archive member {name!r} has an unsafe path")
    return norm


def _members(path: str, kind: str):
    """(name, declared size, opener) for each file of a zip or tar; anything else is refused."""
    if kind == "zip":
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise IntakeError(400, f"not a readable zip archive: {e}") from e
        return zf, [(m.filename, m.file_size, lambda m=m: zf.open(m)) for m in zf.infolist() if not m.is_dir()]
    try:
        tf = tarfile.open(path)
    except tarfile.TarError as e:
        raise IntakeError(400, f"not a readable tar archive: {e}") from e
    out = []
    for m in tf.getmembers():
        if m.isdir():
            continue
        if not m.isfile():
            tf.close()
            raise IntakeError(400, f"archive member {m.name!r} is a link or device; only files are accepted")
        out.append((m.name, m.size, lambda m=m: tf.extractfile(m)))
    return tf, out


def unpack(path: str, kind: str, dest: str, max_bytes: int, max_members: int) -> str:
    """Unpack into ``dest``; returns the path of the one .onnx file inside. Sizes are checked
    against what is actually read, not only what the archive declares."""
    plain = _gunzipped(path, dest + ".tar", max_bytes)
    try:
        return _unpack(plain, kind, dest, max_bytes, max_members)
    finally:
        if plain != path and os.path.exists(plain):
            os.unlink(plain)


def _unpack(path: str, kind: str, dest: str, max_bytes: int, max_members: int) -> str:
    archive, members = _members(path, kind)
    with archive:
        if len(members) > max_members:
            raise IntakeError(400, f"archive has {len(members)} files; at most {max_members} are accepted")
        total = 0
        for name, size, opener in members:
            out = os.path.join(dest, _safe_name(name))
            if total + size > max_bytes:
                raise IntakeError(413, f"archive expands past {max_bytes} bytes (a zip bomb?)")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with opener() as src, open(out, "wb") as dst:
                n = _copy_capped(src, dst, max_bytes - total)
            if n != size:
                raise IntakeError(400, f"archive member {name!r} is not the size its header says")
            total += n
    models = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs if f.endswith(".onnx")]
    if len(models) != 1:
        raise IntakeError(400, f"an archive must hold exactly one .onnx file (with its external data); found {len(models)}")
    return models[0]


def _gunzipped(path: str, out: str, max_bytes: int) -> str:
    """A gzip-compressed tar (.tar.gz, .tgz) decompressed to ``out`` first, stopping at
    ``max_bytes`` (a gzip bomb is refused after reading that much, never expanded whole)."""
    import gzip
    import zlib
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return path
    try:
        with gzip.open(path, "rb") as src, open(out, "wb") as dst:
            _copy_capped(src, dst, max_bytes)
    except (OSError, EOFError, zlib.error) as e:
        raise IntakeError(400, f"not a readable .tar.gz: {e}") from e
    return out


def _copy_capped(src, dst, cap: int) -> int:
    n = 0
    while True:
        chunk = src.read(1 << 16)
        if not chunk:
            return n
        n += len(chunk)
        if n > cap:
            raise IntakeError(413, "archive expands past the allowed size (a zip bomb?)")
        dst.write(chunk)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def process(path: str, board, settings, progress=lambda step: None) -> tuple[bytes, dict]:
    """Uploaded file at ``path`` → (plan bytes, report). Raises IntakeError with an HTTP status."""
    t0 = time.monotonic()
    with open(path, "rb") as f:
        head = f.read(512)
    kind = detect(head)
    report = {"format": kind, "upload_sha256": _sha256(path)}     # what a fleet tool compares to skip a re-upload
    work = tempfile.mkdtemp(prefix=f"intake-{os.getpid()}-", dir=os.path.dirname(path))
    try:
        progress("reading")
        if kind == "plan":
            try:
                with open(path, "rb") as f:
                    plan = Plan.from_bytes(f.read())
            except NnosError as e:
                raise IntakeError(400, f"not a valid plan: {e}") from e
            if plan.kernels:                 # generated code is never taken from an upload: made here again
                report["kernels_dropped"] = {b: len(k) for b, k in plan.kernels.items()}
                plan.kernels = {}
        else:
            model = path
            if kind in ("zip", "tar"):
                model = unpack(path, kind, work, settings.max_unpacked_bytes, settings.max_members)
            else:
                model = os.path.join(work, "model.onnx")
                shutil.copyfile(path, model)
            progress("compiling")
            try:
                from ..compiler import compile
                plan = compile(model, images=board.plan_images())     # in-plan image pre-processing
            except NnosError as e:
                raise IntakeError(422, str(e)) from e
        progress("checking against the board")
        try:
            board.check_plan(plan)
        except ConfigError as e:
            raise IntakeError(422, f"does not fit the board: {e}") from e
        progress("verifying")
        try:
            report["verify"] = verify.finite_outputs(plan)
        except verify.VerifyError as e:
            raise IntakeError(422, str(e)) from e
        progress("measuring")
        report["latency"] = measure(plan)
        budget_ns = int(period_ns(board.rate_hz) * flags.LOOP_BUDGET.get())      # the loop's own rule
        admitted, why = admit(report["latency"], budget_ns)
        report["admission"] = {"budget_us": budget_ns / 1000, "admitted": admitted, "why": why}
        m = plan.meta
        report.update(ops=m["ops"], flops=m["cost"]["flops"], arena_bytes=plan.memory.arena_bytes,
                      inputs=m["inputs"], outputs=m["outputs"], warnings=m["warnings"],
                      fixed_dims=m["source"].get("fixed_dims", []),
                      source_sha256=m["source"]["source_sha256"], seconds=round(time.monotonic() - t0, 3))
        return plan.to_bytes(), report
    finally:
        shutil.rmtree(work, ignore_errors=True)

