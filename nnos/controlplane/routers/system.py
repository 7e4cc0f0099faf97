"""/v1/system: updates of the whole system (a signed RAUC bundle into the root slot not booted,
image/BOARDS.md "Updates") and the reboot that starts using it. The loop keeps ticking through
an install: RAUC's service runs at idle CPU and I/O priority, off the loop's CPU."""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from ... import flags
from ...update import rauc, record
from . import jobs
from .models import loop_holds
from ..deps import ask_init, ask_loop, require_token, state
from ..fetch import checked, fetch
from ..upload import receive

router = APIRouter(prefix="/v1/system", tags=["system"], dependencies=[Depends(require_token)])
RELEASE = "/etc/nnos/release"


def release() -> dict:
    """What the booted root slot is: {"version", "compatible", "slot"} (from the image and the
    kernel command line; {} off the appliance)."""
    out = {}
    try:
        with open(RELEASE) as f:
            out = dict(line.strip().split("=", 1) for line in f if "=" in line)
    except OSError:
        pass
    try:
        with open("/proc/cmdline") as f:
            slot = [a.split("=", 1)[1] for a in f.read().split() if a.startswith("rauc.slot=")]
        if slot:
            out["slot"] = slot[0]
    except OSError:
        pass
    return {k.lower(): v for k, v in out.items()}


def booted_bundle(st) -> str | None:
    """The version of the bundle the booted slot was installed from (RAUC's record of it; None for
    the slot the image was flashed with), asked once a boot."""
    if "bundle" not in st.update_booted and rauc.available() is None:
        try:
            s = rauc.status()
            st.update_booted["bundle"] = (s["slots"].get(s["booted"]) or {}).get("version")
        except (rauc.UpdateError, ValueError, KeyError):
            return None                                   # RAUC's service is not up yet: asked again
    return st.update_booted.get("bundle")


def summary(st) -> dict:
    """The update part of /v1/status: the booted slot, its version (the bundle's, once it came
    from one), the last update, the health gate's verdict on this boot (``this_boot``: None
    until it gave one; updates wait for it)."""
    rec = record.load(st.settings.data)
    job = st.update_job
    rel = release()
    bundle = booted_bundle(st) if rel.get("slot") else None
    return {**rel, **({"version": bundle} if bundle else {}), "available": rauc.available() is None,
            "last_update": record.summary(rec),
            "state": rec["state"] if rec else None, "on_probation": bool(rec and rec["state"] == "probation"),
            "this_boot": record.judged(st.settings.run),
            "installing": job.view() if job is not None and job.state == "running" else None}


@router.get("/update")
def get_update(st=Depends(state)):
    """The booted slot and version, the last update (``last_update``: e.g. "rolled back because …")
    and RAUC's view of both slots."""
    out = summary(st)
    if out["available"]:
        try:
            out["slots"] = rauc.status()["slots"]
        except rauc.UpdateError as e:
            out["slots_error"] = str(e)
    return out


def refuse_now(st, own_job=None) -> None:
    """409 when an update must wait: one already installing (other than ``own_job``, the job
    asking again after its download), the loop failing safe, a model on probation."""
    why = rauc.available()
    if why:
        raise HTTPException(409, f"updates are not possible here: {why}")
    if st.update_job is not None and st.update_job.state == "running" and st.update_job is not own_job:
        raise HTTPException(409, f"an update is already installing (job {st.update_job.id}); wait for it")
    rec = record.load(st.settings.data)
    if rec and rec["state"] == "probation":
        raise HTTPException(409, "this slot is itself on probation after an update; wait until it is kept")
    if record.judged(st.settings.run) is None:
        raise HTTPException(409, "this boot is not judged yet: the booted slot is marked good once the loop "
                                 "ticks and the API answers (a minute at most); try again then")
    try:
        loop = ask_loop(st, {"cmd": "status"}, 5.0)
    except HTTPException:
        loop = {}
    if loop.get("failsafe"):
        raise HTTPException(409, f"the loop is in failsafe ({loop.get('reason') or 'see /v1/status'}): "
                                 "an update waits until it runs normally")
    held = loop_holds(st)
    if any("probation" in str(v) for v in held.values()):
        raise HTTPException(409, "a model is on probation in the loop: wait for its activation to end")


@router.post("/update", status_code=202, summary="Install a signed RAUC bundle into the other root slot")
async def update(req: Request, reboot: str = "later", probation_s: float | None = None,
                 url: str | None = None, st=Depends(state)):
    """The body is the bundle (`nnos-<version>-<arch>.raucb`), streamed to the data partition
    under NNOS_MAX_BUNDLE_BYTES — or ``url``, where the device fetches it from (its local
    network only); then checked (signature, compatible) and installed by RAUC into the slot not
    booted (a casync bundle from its URL: RAUC fetches only the chunks the booted slot lacks),
    as a job (/v1/jobs/{id}: its steps and percentages). ``reboot=now`` reboots into it when
    the install succeeds (actuators to their failsafe first); ``later`` waits for POST
    /v1/system/reboot. ``probation_s``: how long the new slot must run healthy before it is
    kept (default NNOS_UPDATE_PROBATION_S)."""
    if reboot not in ("now", "later"):
        raise HTTPException(422, f"reboot must be 'now' or 'later', got {reboot[:20]!r}")
    if probation_s is not None and not 0 <= probation_s <= 3600:
        raise HTTPException(422, f"probation_s must be 0–3600 s, got {probation_s}")
    refuse_now(st)
    limit = flags.MAX_BUNDLE_BYTES.get()
    declared = req.headers.get("content-length")
    if url is not None:
        if declared not in (None, "0"):
            raise HTTPException(422, "send the bundle as the body or give its url, not both")
        await checked(url)                        # off the local network: refused now, not in the job
        return _start(st, _incoming(st), lambda job, path: _fetch_and_install(st, url, path, reboot, probation_s, job))
    if declared and declared.isdigit():
        if int(declared) > limit:
            raise HTTPException(413, f"bundle of {declared} bytes exceeds the {limit}-byte limit (NNOS_MAX_BUNDLE_BYTES)")
        free = shutil.disk_usage(st.settings.data).free
        if int(declared) > free:
            raise HTTPException(507, f"the data partition has {free} bytes free; the bundle needs {declared}")
    path = _incoming(st)
    try:
        with open(path, "wb") as f:
            size = await receive(req, f, limit)
        if size == 0:
            raise HTTPException(400, "empty upload: send the bundle file as the request body")
        refuse_now(st)                          # nothing started while the body arrived
    except BaseException:
        _unlink(path)
        raise
    return _start(st, path, lambda job, path: _install(st, path, reboot, probation_s, job))


def _incoming(st) -> str:
    """A new file for one bundle in DATA/updates (one file an upload: two never share one)."""
    folder = os.path.join(st.settings.data, "updates")
    os.makedirs(folder, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="incoming-", suffix=".raucb", dir=folder)
    os.close(fd)
    return path


def _start(st, path: str, work) -> dict:
    body = jobs.start(st, "update", lambda job: work(job, path))
    st.update_job = st.jobs[body["job"]]         # the next request sees it at once
    return body


async def _fetch_and_install(st, url: str, path: str, reboot: str, probation_s: float | None, job) -> dict:
    def progress(done: int, total: int | None) -> None:
        job.step = f"downloading {done >> 20} of {total >> 20} MiB" if total else f"downloading {done >> 20} MiB"
    job.step = f"downloading {url[:200]}"
    try:
        with open(path, "wb") as f:
            await fetch(url, f, flags.MAX_BUNDLE_BYTES.get(), progress)
        refuse_now(st, own_job=job)             # what changed while it downloaded (a failsafe, a probation)
    except BaseException:
        st.update_job = None
        _unlink(path)
        raise
    return await _install(st, path, reboot, probation_s, job, url=(await checked(url))[0])


async def _install(st, path: str, reboot: str, probation_s: float | None, job, url: str | None = None) -> dict:
    """Check the bundle at ``path`` and have RAUC install it; a casync bundle is installed from
    ``url`` (the checked address it was fetched from), its chunks fetched by RAUC."""
    data = st.settings.data
    try:
        job.step = "checking the bundle"
        try:
            info = await run_in_threadpool(rauc.info, path)
            have = await run_in_threadpool(rauc.status)
        except rauc.UpdateError as e:
            raise HTTPException(422, str(e)) from e
        if info.get("compatible") != have.get("compatible"):
            raise HTTPException(422, f"the bundle is for {info.get('compatible')!r}; this device is "
                                     f"{have.get('compatible')!r}")
        target = "B" if have.get("booted") == "A" else "A"
        big = await run_in_threadpool(rauc.too_big, info, have["slots"].get(target) or {})
        if big:
            raise HTTPException(422, f"the bundle does not fit slot {target}: {big}")
        try:
            given = rauc.source(info, path, url)
        except rauc.UpdateError as e:
            raise HTTPException(422, str(e)) from e
        rec = record.save(data, {"state": "installing", "from": {"slot": have.get("booted"), "version": release().get("version")},
                                 "to": {"slot": target, "version": info.get("version")}, "started_at": time.time(),
                                 "probation_s": probation_s})

        def progress(pct: int, what: str) -> None:
            job.step = f"installing {pct}% {what}".strip()
        job.step = f"installing into slot {target}"
        t0 = time.monotonic()
        try:
            await run_in_threadpool(rauc.install, given, progress)
        except rauc.UpdateError as e:
            record.change(data, "failed", why=str(e), at=time.time())
            raise HTTPException(422, str(e)) from e
        rec = record.change(data, "installed", install_s=round(time.monotonic() - t0, 1), at=time.time())
    finally:
        st.update_job = None
        _unlink(path)
    if reboot == "now":
        job.step = "rebooting"
        ask_init("reboot")
    return {"installed": rec["to"], "install_s": rec["install_s"],
            "reboot": "now" if reboot == "now" else "POST /v1/system/reboot to boot it"}


@router.post("/reboot", status_code=202)
def reboot_now():
    """Reboot (into a newly installed slot, if there is one): actuators to their failsafe first."""
    ask_init("reboot")
    return {"ok": True, "action": "reboot"}


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
