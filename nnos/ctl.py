"""`nnos ctl`: the control plane's client. URL and token from flags or NNOS_URL / NNOS_TOKEN
(default: http://127.0.0.1:8080 and the token file of NNOS_DATA)."""
from __future__ import annotations

import json
import os

from . import flags
from .errors import NnosError


def _client(a):
    import httpx
    url = a.url or os.environ.get("NNOS_URL") or f"http://127.0.0.1:{flags.API_PORT.get()}"
    token = a.token or os.environ.get("NNOS_TOKEN")
    if not token:
        path = os.path.join(flags.DATA.get(), "token")
        try:
            token = open(path).read().strip()
        except OSError as e:
            raise NnosError(f"no token: pass --token, set NNOS_TOKEN, or make {path} readable") from e
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=a.timeout)


def _show(r) -> None:
    try:
        body = r.json()
    except ValueError:
        body = r.text
    if r.status_code >= 400:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        raise NnosError(f"HTTP {r.status_code}: {detail if isinstance(detail, str) else json.dumps(detail)}")
    print(body if isinstance(body, str) else json.dumps(body, indent=1, ensure_ascii=False))


def run(a) -> None:
    import httpx
    try:
        with _client(a) as c:
            if a.action == "status":
                _show(c.get("/v1/status"))
            elif a.action == "models":
                _show(c.get("/v1/models"))
            elif a.action == "push":
                with open(a.arg, "rb") as f:
                    body = f.read()
                headers = {}
                if os.path.exists(a.arg + ".sig"):              # made by `nnos sign`
                    headers["X-Nnos-Signature"] = open(a.arg + ".sig").read().strip()
                _show(c.post("/v1/models", content=body, headers=headers))
            elif a.action == "activate":
                _show(c.post(f"/v1/models/{_model_id(c, a.arg)}/activate"))
            elif a.action == "rollback":
                _show(c.post("/v1/rollback"))
            elif a.action in ("arm", "disarm"):
                _show(c.post(f"/v1/{a.action}", json={"device": a.arg} if a.arg else {}))
            elif a.action == "calibration":
                if a.arg:                                       # a file as `nnos calibrate --out` writes it
                    with open(a.arg) as f:
                        doc = json.load(f)
                    _show(c.put("/v1/calibration", json={"devices": doc.get("devices", doc)}))
                else:
                    _show(c.get("/v1/calibration"))
            elif a.action == "vm":
                _vm(c, a.arg, a.rest)
            elif a.action == "update":
                _update(c, a.arg, a.rest, max(a.timeout, 600.0))
            elif a.action == "logs":
                r = c.get("/v1/logs", params={"process": a.arg or "loop"})
                if r.status_code < 400:
                    print("\n".join(r.json()["lines"]))
                else:
                    _show(r)
    except httpx.HTTPError as e:
        raise NnosError(f"cannot reach the control plane: {e}") from e
    except OSError as e:
        raise NnosError(f"{a.arg}: {e.strerror}") from e


def _update(c, bundle: str | None, rest: list[str], wait_s: float = 600.0) -> None:
    """`nnos ctl update [BUNDLE|URL [now]]`: the update state, or install BUNDLE (streamed; the
    job's steps shown as they change) or the one at URL (the device fetches it from its local
    network); with ``now`` the device reboots into it, and this waits (``wait_s``) until it
    answers again from the slot it booted."""
    import time
    if not bundle:
        _show(c.get("/v1/system/update"))
        return
    now = "now" in rest
    params = {"reboot": "now" if now else "later"}
    if bundle.startswith(("http://", "https://")):         # the device fetches it (its local network)
        r = c.post("/v1/system/update", params={**params, "url": bundle})
    else:
        with open(bundle, "rb") as f:
            r = c.post("/v1/system/update", content=f, params=params)
    if r.status_code != 202:
        _show(r)
    import httpx
    job, last = r.json()["job"], ""
    while True:
        try:
            j = c.get(f"/v1/jobs/{job}").json()
        except httpx.HTTPError:
            if now and last.startswith(("installing", "rebooting")):   # it went down to boot the new slot
                return _after_reboot(c, wait_s)
            raise
        if j["step"] != last:
            print(f"update: {j['step']}", flush=True)
            last = j["step"]
        if j["state"] != "running":
            break
        time.sleep(1.0)
    if j["state"] == "failed":
        raise NnosError(f"update failed: {j['error']['detail']}")
    print(json.dumps(j["result"], indent=1))
    if now:
        _after_reboot(c, wait_s)


def _after_reboot(c, wait_s: float) -> None:
    """Wait until the rebooted device answers; say which slot it booted and where the update stands."""
    import time

    import httpx
    print("update: the device is rebooting into the new slot", flush=True)
    deadline, seen_down = time.monotonic() + wait_s, False
    while time.monotonic() < deadline:
        try:
            u = c.get("/v1/system/update", timeout=10).json()
        except httpx.HTTPError:
            seen_down = True
            time.sleep(2.0)
            continue
        if not seen_down:                           # still the old boot, going down
            time.sleep(1.0)
            continue
        print(f"update: booted slot {u.get('slot')} ({u.get('version')}): {u.get('last_update')}")
        if u.get("state") in ("rolled back", "failed"):
            raise NnosError(f"update {u['state']}: {u.get('last_update')}")
        return
    raise NnosError(f"the device did not answer within {wait_s:.0f} s of its reboot: `nnos ctl update` shows the outcome later")


def _model_id(c, given: str | None) -> str:
    """A full id, or a unique prefix of one (the dashboard shows 12 characters)."""
    if not given:
        raise NnosError("activate needs a MODEL_ID (or a unique prefix of one: nnos ctl models lists them)")
    if len(given) == 64:
        return given
    r = c.get("/v1/models")
    if r.status_code >= 400:
        _show(r)
    matches = [m["id"] for m in r.json()["models"] if m["id"].startswith(given.lower())]
    if len(matches) != 1:
        raise NnosError(f"{given!r} names {'no model' if not matches else f'{len(matches)} models'}: "
                        "give more of the id (nnos ctl models lists them)")
    return matches[0]


VM_USAGE = ("status | start | stop | network on|off | settings [KEY=VALUE ...] | proposals | "
            "accept PROPOSAL | reject PROPOSAL")


def _vm(c, arg: str | None, rest: list[str]) -> None:
    """nnos ctl vm ...: the legacy VM (see VM_USAGE)."""
    if arg in (None, "status"):
        _show(c.get("/v1/vm"))
    elif arg in ("start", "stop"):
        _show(c.post(f"/v1/vm/{arg}"))
    elif arg == "network" and rest in (["on"], ["off"]):
        _show(c.post("/v1/vm/network", json={"enabled": rest[0] == "on"}))
    elif arg == "settings":
        changes = {}
        for kv in rest:
            k, sep, v = kv.partition("=")
            if not sep:
                raise NnosError(f"vm settings: expected KEY=VALUE, got {kv!r}")
            try:
                changes[k] = json.loads(v)            # numbers, lists, true/false
            except ValueError:
                changes[k] = v                        # a plain string (a URL)
        _show(c.put("/v1/vm/settings", json=changes) if changes else c.get("/v1/vm/settings"))
    elif arg == "proposals" and not rest:
        _show(c.get("/v1/vm/proposals"))
    elif arg == "accept" and len(rest) == 1:
        _show(c.post(f"/v1/vm/proposals/{rest[0]}/accept"))
    elif arg == "reject" and len(rest) == 1:
        r = c.delete(f"/v1/vm/proposals/{rest[0]}")
        if r.status_code >= 400:
            _show(r)
        print(f"rejected {rest[0]}")
    else:
        raise NnosError(f"vm {' '.join([arg, *rest])!r}: expected {VM_USAGE}")


def add_parser(sub) -> None:
    c = sub.add_parser("ctl", help="talk to the control plane (status, models, push, activate, rollback, logs, "
                       "arm, disarm, calibration, vm, update)")
    c.add_argument("action", choices=["status", "models", "push", "activate", "rollback", "logs", "arm", "disarm",
                                      "calibration", "vm", "update"])
    c.add_argument("arg", nargs="?", help=f"push: FILE; activate: MODEL_ID; logs: PROCESS; arm/disarm: [DEVICE]; "
                   f"calibration: [FILE to store]; vm: {VM_USAGE}; update: [BUNDLE or URL]")
    c.add_argument("rest", nargs="*", help="vm: network on|off, settings KEY=VALUE..., accept/reject PROPOSAL; "
                   "update BUNDLE now: reboot into it once installed")
    c.add_argument("--url")
    c.add_argument("--token")
    c.add_argument("--timeout", type=float, default=180.0)
    c.set_defaults(fn=run)

