"""The model store in the data directory: content-addressed plans, an active and a previous
pointer, and a history of what was activated and why. Every update is atomic, so a power cut
at any instant leaves a store that loads.

    DATA/models/<sha256>.nnos   plan files, named by the hash of their bytes
    DATA/models/<sha256>.json   the report made when the model was admitted (optional)
    DATA/models/<sha256>.sig    the device's countersignature (signed models)
    DATA/models/<sha256>.src    the file the plan was compiled from, as uploaded (ONNX, .zip,
                                .tar): when nnos's plan format changes, the plan is recompiled
                                from it at the supervisor's start, never lost
    DATA/state.json             {"active", "previous", "history": [...]}
    DATA/superseded.json        {old id: new id}: plans recompiled after a system update whose
                                old files (and the pointers to them) stay until the updated
                                slot is kept, so that the slot rolled back to finds its plans
"""
from __future__ import annotations

import json
import os
import re
import time

from .digest import sha256
from .errors import NnosError, PlanFormatError
from .fsutil import atomic_write, remove_stale_temps
from .plan import Plan
from .plan.artifact import FORMAT_VERSION, format_version

ID = re.compile(r"^[0-9a-f]{64}$")
HISTORY = 200


class StoreError(NnosError):
    pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ModelStore:
    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.models = os.path.join(data_dir, "models")
        self.state_path = os.path.join(data_dir, "state.json")
        os.makedirs(self.models, exist_ok=True)

    def clean(self) -> int:
        """Remove the temp files of writers that died (a power cut, a SIGKILL). Only the
        supervisor calls this, at start; readers never clean."""
        n = remove_stale_temps(self.models) + remove_stale_temps(self.data_dir)
        for name in os.listdir(self.models):                # a report or signature whose plan never landed
            plan = os.path.join(self.models, name.rsplit(".", 1)[0] + ".nnos")
            if name.endswith((".json", ".sig", ".src")) and not os.path.exists(plan):
                _unlink(os.path.join(self.models, name))
                n += 1
        return n

    # --- plans ------------------------------------------------------------------------------
    def put(self, data: bytes, report: dict | None = None, signature: str | None = None,
            source: str | None = None) -> str:
        """Store plan bytes (validated first) with their report, the device's countersignature
        (signed models) and the file at ``source`` it was compiled from; returns the model id
        (sha256 of the bytes)."""
        Plan.from_bytes(data)                              # refuses anything that is not a plan
        mid = sha256(data).hexdigest()
        path, rpath = self._path(mid), self._path(mid, ".json")
        existed = os.path.exists(path)
        # whole or not at all: the report first, then the plan, whose presence makes it stored
        if report is not None:
            atomic_write(rpath, json.dumps(report, indent=1, default=str).encode())
        if signature is not None:
            atomic_write(self._path(mid, ".sig"), signature.encode())
        if source is not None:
            with open(source, "rb") as f:
                atomic_write(self._path(mid, ".src"), f.read(), mode=0o600)
        if not existed:
            try:
                atomic_write(path, data)
            except BaseException:
                for ext, made in ((".json", report is not None), (".sig", signature is not None),
                                  (".src", source is not None)):
                    if made:
                        _unlink(self._path(mid, ext))
                raise
        return mid

    def signature(self, mid: str) -> str | None:
        try:
            with open(self._path(mid, ".sig")) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def check_signed(self, mid: str) -> None:
        """The signing policy for a stored model (raises SignatureError)."""
        from .signing import check_stored
        check_stored(self.data_dir, mid, self.read(mid), self.signature(mid))

    def read(self, mid: str) -> bytes:
        """The plan file's bytes, checked against the id."""
        try:
            with open(self._path(mid), "rb") as f:
                data = f.read()
        except FileNotFoundError as e:
            raise StoreError(f"no model {mid} in {self.models}") from e
        if sha256(data).hexdigest() != mid:
            raise StoreError(f"model {mid}: file content does not match its id (corrupted on disk)")
        return data

    def load(self, mid: str) -> Plan:
        data = self.read(mid)
        try:
            return Plan.from_bytes(data)
        except PlanFormatError as e:
            raise StoreError(f"model {mid}: {e}") from e

    def report(self, mid: str) -> dict | None:
        try:
            with open(self._path(mid, ".json")) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def ids(self) -> list[str]:
        return sorted(n[:-5] for n in os.listdir(self.models) if n.endswith(".nnos") and ID.match(n[:-5]))

    def delete(self, mid: str) -> None:
        st = self.state()
        if mid == st["active"]:
            raise StoreError(f"model {mid} is active: activate another one before deleting it")
        for ext in (".nnos", ".json", ".sig", ".src"):
            _unlink(self._path(mid, ext))
        if mid == st["previous"]:
            st["previous"] = None
            self._write_state(st)

    # --- pointers -----------------------------------------------------------------------------
    def state(self) -> dict:
        try:
            with open(self.state_path) as f:
                st = json.load(f)
        except FileNotFoundError:
            st = {}
        except json.JSONDecodeError as e:      # cannot happen with atomic writes; say so if it does
            raise StoreError(f"{self.state_path} is not valid JSON: {e}") from e
        m = self.superseded()
        return {"active": m.get(st.get("active"), st.get("active")), "previous": m.get(st.get("previous"), st.get("previous")),
                "history": st.get("history", [])}

    def activate(self, mid: str, reason: str = "activated") -> dict:
        if not os.path.exists(self._path(mid)):
            raise StoreError(f"no model {mid} in the store")
        st = self.state()
        if st["active"] != mid:
            st["previous"], st["active"] = st["active"], mid
        return self._log(st, "activate", mid, reason)

    def rollback(self, reason: str = "rollback requested") -> dict:
        st = self.state()
        if not st["previous"]:
            raise StoreError("no previous model to roll back to")
        st["active"], st["previous"] = st["previous"], st["active"]
        return self._log(st, "rollback", st["active"], reason)

    def startup_order(self) -> list[tuple[str, str]]:
        """What to try at start: the active model, then the previous one."""
        st = self.state()
        return [(st[k], k) for k in ("active", "previous") if st[k]]

    def _log(self, st: dict, action: str, mid: str, reason: str) -> dict:
        st["history"] = (st["history"] + [{"t": time.time(), "action": action, "model": mid, "reason": reason}])[-HISTORY:]
        self._write_state(st)
        return st

    def _write_state(self, st: dict) -> None:
        back = {new: old for old, new in self.superseded().items()}     # the file keeps the old ids
        st = {**st, "active": back.get(st["active"], st["active"]), "previous": back.get(st["previous"], st["previous"])}
        atomic_write(self.state_path, json.dumps(st, indent=1).encode())

    def source_path(self, mid: str) -> str | None:
        """The file the model was compiled from, when the store kept it."""
        path = self._path(mid, ".src")
        return path if os.path.exists(path) else None

    def outdated(self) -> list[str]:
        """Stored plans in a format this nnos does not read (an update changed it)."""
        out = []
        for mid in self.ids():
            with open(self._path(mid), "rb") as f:
                if format_version(f.read(64)) != FORMAT_VERSION:
                    out.append(mid)
        return out

    def replace(self, old: str, new: str, why: str, keep_old: bool = False) -> None:
        """``new`` takes ``old``'s place in the pointers (active, previous) and ``old`` goes —
        or, ``keep_old``, stays with the pointers on disk until ``commit_superseded``."""
        if keep_old:
            atomic_write(self._superseded_path, json.dumps({**self.superseded(), old: new}).encode())
            self._log(self.state(), "replace", new, f"{why} (was {old}, kept until this nnos is kept)")
            return
        st = self.state()
        changed = False
        for k in ("active", "previous"):
            if st[k] == old:
                st[k], changed = new, True
        if changed:
            self._log(st, "replace", new, f"{why} (was {old})")
        for ext in (".nnos", ".json", ".sig", ".src"):
            _unlink(self._path(old, ext))

    @property
    def _superseded_path(self) -> str:
        return os.path.join(self.data_dir, "superseded.json")

    def superseded(self) -> dict[str, str]:
        """Old id → the plan recompiled from it in this nnos's format, while the old one is kept."""
        try:
            with open(self._superseded_path) as f:
                m = json.load(f)
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as e:
            raise StoreError(f"{self._superseded_path} is not valid JSON: {e}") from e
        return {old: new for old, new in m.items() if ID.match(old) and ID.match(str(new)) and self._current(new)}

    def commit_superseded(self) -> list[str]:
        """The recompiled plans take their old ones' places for good and the old files go (the
        updated slot was kept). Safe to cut at any point: each state on disk loads the same."""
        m = self.superseded()
        if not m and not os.path.exists(self._superseded_path):
            return []
        atomic_write(self.state_path, json.dumps(self.state(), indent=1).encode())    # the new ids
        _unlink(self._superseded_path)
        for old in m:
            for ext in (".nnos", ".json", ".sig", ".src"):
                _unlink(self._path(old, ext))
        return list(m)

    def _current(self, mid: str) -> bool:
        try:
            with open(self._path(mid), "rb") as f:
                return format_version(f.read(64)) == FORMAT_VERSION
        except (OSError, PlanFormatError):
            return False

    def plan_path(self, mid: str) -> str:
        return self._path(mid)

    def _path(self, mid: str, ext: str = ".nnos") -> str:
        if not ID.match(mid or ""):
            raise StoreError(f"{mid!r} is not a model id (64 hex digits)")
        return os.path.join(self.models, mid + ext)
