#!/usr/bin/python
# ruff: noqa: E402  (Ansible: DOCUMENTATION comes before the imports)
"""nnos_update: a signed RAUC bundle installed into the device's other root slot, the device
rebooted into it, and the task done only once the device's own health gate kept the new slot
(probation passed, slot marked good). Unchanged when the booted slot already runs ``version``
and was kept; in check mode, says what it would do. A new slot the device rolls back fails the
task with the device's reason (it runs its old slot again)."""
from __future__ import annotations

DOCUMENTATION = r"""
module: nnos_update
short_description: Install a system update bundle on an nnos device and wait for its health-gated commit
options:
  url: {description: "The device's API (http://ADDRESS:8080).", required: true, type: str}
  token: {description: The device's API token., required: true, type: str, no_log: true}
  bundle: {description: The bundle file on the controller (uploaded)., type: path}
  bundle_url: {description: "Where the device fetches the bundle itself (its local network; a casync bundle's URL).", type: str}
  version: {description: The bundle's version (rauc info); a device already kept on it is unchanged., required: true, type: str}
  probation_s: {description: Seconds the new slot must run healthy before the device keeps it., type: float, default: 60}
  timeout: {description: Seconds for the upload, install, reboot and probation together., type: float, default: 1800}
"""

import time
import urllib.parse

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nnos.fleet.plugins.module_utils.nnos_api import ApiError, call


def kept(update: dict, version: str) -> bool:
    """The booted slot runs ``version`` and was kept: its update passed (or it was flashed so),
    and this boot was not rolled back — "good" on the boot that kept it, "committed" on later
    ones (a device rebooted since is not updated again)."""
    return (update.get("version") == version and update.get("state") in (None, "good")
            and update.get("this_boot") in ("good", "committed"))


def install(m, p) -> str:
    """Start the install (reboot=now); the job's id."""
    params = {"reboot": "now", "probation_s": p["probation_s"]}
    if p["bundle_url"]:
        params["url"] = p["bundle_url"]
        body = b""
    else:
        with open(p["bundle"], "rb") as f:
            body = f.read()
    return call(p["url"], p["token"], "POST", "/v1/system/update", body, timeout=p["timeout"],
                params=urllib.parse.urlencode(params))["job"]


def wait_for_verdict(m, p, job: str, deadline: float) -> dict:
    """The job until the device goes down to reboot, then the device until its health gate judged
    the new boot: the update part of its status."""
    went_down = False
    while time.monotonic() < deadline:
        try:
            if not went_down:
                j = call(p["url"], p["token"], path=f"/v1/jobs/{job}", timeout=10)
                if j.get("state") == "failed":
                    err = j.get("error") or {}
                    m.fail_json(msg=f"{p['url']}: the update was refused: {err.get('detail') or j}", job=j)
            else:
                u = call(p["url"], p["token"], path="/v1/status", timeout=10)["update"]
                if u.get("this_boot") and u.get("state") in ("good", "rolled back", "failed", None):
                    return u
        except ApiError as e:
            if not e.offline:
                m.fail_json(msg=str(e))
            went_down = True                                 # rebooting
        time.sleep(2.0)
    m.fail_json(msg=f"{p['url']}: no verdict on the new slot within {p['timeout']:.0f} s (the device may still be "
                    "in its probation or its boot attempts); run again to see where it stands")


def main():
    m = AnsibleModule(argument_spec={
        "url": {"required": True}, "token": {"required": True, "no_log": True}, "bundle": {"type": "path"},
        "bundle_url": {"type": "str"}, "version": {"required": True},
        "probation_s": {"type": "float", "default": 60.0}, "timeout": {"type": "float", "default": 1800.0}},
        required_one_of=[("bundle", "bundle_url")], mutually_exclusive=[("bundle", "bundle_url")], supports_check_mode=True)
    p = m.params
    try:
        before = call(p["url"], p["token"], path="/v1/status", timeout=30).get("update")
    except ApiError as e:
        m.fail_json(msg=str(e), offline=e.offline)
    if not before or not before.get("available"):
        m.fail_json(msg=f"{p['url']}: system updates are not possible on this device "
                        f"({'its nnos has no updates' if before is None else 'no update slots: not an nnos image'})")
    if kept(before, p["version"]):
        m.exit_json(changed=False, slot=before.get("slot"), msg=f"already runs {p['version']} (slot {before.get('slot')}, kept)")
    if m.check_mode:
        m.exit_json(changed=True, msg=f"would install {p['version']} over {before.get('version')} "
                                      f"(slot {before.get('slot')}) and reboot into it")
    deadline = time.monotonic() + p["timeout"]
    try:
        job = install(m, p)
    except ApiError as e:
        m.fail_json(msg=str(e), offline=e.offline)
    after = wait_for_verdict(m, p, job, deadline)
    if not kept(after, p["version"]):
        m.fail_json(msg=f"{p['url']}: {p['version']} was not kept: {after.get('last_update')}; the device runs "
                        f"{after.get('version')} (slot {after.get('slot')})", update=after)
    m.exit_json(changed=True, slot=after.get("slot"), msg=f"runs {p['version']} in slot {after.get('slot')} "
                                                          f"(was {before.get('version')}, slot {before.get('slot')}): kept")


if __name__ == "__main__":
    main()
