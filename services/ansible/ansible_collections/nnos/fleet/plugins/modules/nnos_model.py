#!/usr/bin/python
# ruff: noqa: E402  (Ansible: DOCUMENTATION comes before the imports)
"""nnos_model: make a model file the device's active model — uploaded (compiled and checked on
the device) unless the device already holds it, then activated through the loop's probation.
Unchanged when it is already active (the file's sha256 against what the device recorded at
upload); in check mode, says what it would do. A model the loop rolls back in probation fails
the task with the device's reason — the device itself stays on its previous model."""
from __future__ import annotations

DOCUMENTATION = r"""
module: nnos_model
short_description: Upload and activate a model on an nnos device (idempotent, check mode)
options:
  url: {description: "The device's API (http://ADDRESS:8080).", required: true, type: str}
  token: {description: The device's API token., required: true, type: str, no_log: true}
  src:
    description: The model file (.onnx, .zip/.tar with external data, or a plan) on the controller.
    required: true
    type: path
  name: {description: What listings call it., type: str, default: ""}
  probation_s: {description: Seconds the loop runs it on probation before it is committed., type: float, default: 10}
  timeout: {description: Seconds an upload's compile or an activation may take., type: float, default: 600}
"""

import hashlib
import urllib.parse

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nnos.fleet.plugins.module_utils.nnos_api import ApiError, call, lacks, version_of


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stored(listing: dict, digest: str):
    """The id of the stored model uploaded from these bytes (the active one, if several)."""
    found = None
    for m in listing.get("models", []):
        if (m.get("report") or {}).get("upload_sha256") == digest:
            found = m["id"] if found is None or m["id"] == listing.get("active") else found
    return found


def activate(p: dict, mid: str) -> dict:
    """The loop's outcome of an activation (active, rolled back, refused: a 409 says which)."""
    try:
        return call(p["url"], p["token"], "POST", f"/v1/models/{mid}/activate", b"", timeout=p["timeout"] + p["probation_s"],
                    params=urllib.parse.urlencode({"probation_s": p["probation_s"]}))
    except ApiError as e:
        if isinstance(e.detail, dict) and "outcome" in e.detail:
            return e.detail
        raise


def main():
    m = AnsibleModule(argument_spec={
        "url": {"required": True}, "token": {"required": True, "no_log": True}, "src": {"required": True, "type": "path"},
        "name": {"default": ""}, "probation_s": {"type": "float", "default": 10.0},
        "timeout": {"type": "float", "default": 600.0}},
        supports_check_mode=True)
    p = m.params
    digest = sha256(p["src"])
    try:
        listing = call(p["url"], p["token"], path="/v1/models", timeout=30)
        mid = stored(listing, digest)
        before = listing.get("active")
        if mid is not None and mid == before:
            m.exit_json(changed=False, model=mid, msg=f"already active ({mid[:12]})")
        if m.check_mode:
            what = f"activate stored model {mid[:12]}" if mid else "upload and activate it"
            m.exit_json(changed=True, model=mid, before=before, msg=f"would {what} (active now: {(before or 'none')[:12]})")
        warnings = []
        if mid is None:
            with open(p["src"], "rb") as f:
                body = f.read()
            params = urllib.parse.urlencode({"name": p["name"]}) if p["name"] else ""
            mid = call(p["url"], p["token"], "POST", "/v1/models", body, timeout=p["timeout"], params=params)["id"]
            if "upload_sha256" not in (call(p["url"], p["token"], path=f"/v1/models/{mid}").get("report") or {}):
                warnings.append(lacks(p["url"], version_of(p["url"], p["token"]), "upload hashes")
                                + ": the model is uploaded again on every run")
        out = activate(p, mid)
    except ApiError as e:
        m.fail_json(msg=str(e), status=e.status, offline=e.offline)
    if out.get("outcome") != "active":
        m.fail_json(msg=f"{p['url']}: model {mid[:12]} was {out.get('outcome')}: {out.get('reason')}; "
                        f"the device runs {(before or 'none')[:12]} again", model=mid, outcome=out.get("outcome"),
                    reason=out.get("reason"))
    m.exit_json(changed=True, model=mid, before=before, warnings=warnings,
                msg=f"active: {mid[:12]} (was {(before or 'none')[:12]})")


if __name__ == "__main__":
    main()
