"""After an update that changed nnos's plan format: every stored plan in the old format is
recompiled from the source the store kept, through the same intake as an upload (compile,
verify, check against the board, measure), and takes its old place (active, previous). A
model whose source was not kept (it was uploaded as a plan) or no longer compiles stays as it
was and is named in the log: nothing is deleted that cannot be made again. On a device with
update slots the old plans stay too, until the updated slot is kept (nnos.update.health): a
rollback's older nnos still finds its own."""
from __future__ import annotations

from ..plan.artifact import FORMAT_VERSION
from ..signing import SignatureError, countersign
from ..store import ModelStore


def recompile_outdated(store: ModelStore, board, log, keep_old: bool = False) -> dict[str, str | None]:
    """Old id → new id (None: left as it was, with the reason logged). ``keep_old``: the old
    plans stay (``store.superseded()``) until ``store.commit_superseded()``."""
    done: dict[str, str | None] = {}
    waiting = store.superseded()                  # recompiled at an earlier boot of this slot
    if not [m for m in store.outdated() if m not in waiting]:
        return done
    from ..controlplane.intake import IntakeError, process      # the compiler: loaded only when needed
    from ..controlplane.settings import Settings
    settings = Settings(data=store.data_dir, board_path="")
    for mid in [m for m in store.outdated() if m not in waiting]:
        src = store.source_path(mid)
        done[mid] = None
        if src is None:
            log(f"supervisor: model {mid[:12]} is in an old plan format and was uploaded as a plan: "
                f"upload its ONNX model again to run it")
            continue
        try:
            data, report = process(src, board, settings)
        except IntakeError as e:
            log(f"supervisor: model {mid[:12]} could not be recompiled from its source ({e.message}); kept as it was")
            continue
        new = store.put(data, {**(store.report(mid) or {}), **report, "recompiled_from": mid},
                        _signature(store, mid, data), source=src)
        store.replace(mid, new, f"recompiled for plan format {FORMAT_VERSION} from its stored source", keep_old)
        done[mid] = new
        log(f"supervisor: model {mid[:12]} recompiled for plan format {FORMAT_VERSION} as {new[:12]}")
    return done


def _signature(store: ModelStore, mid: str, data: bytes) -> str | None:
    """The device countersigns the recompiled plan when it had countersigned the old one."""
    if store.signature(mid) is None:
        return None
    try:
        store.check_signed(mid)
        return countersign(store.data_dir, data)
    except (OSError, SignatureError):
        return None
