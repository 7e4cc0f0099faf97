#!/usr/bin/python
# ruff: noqa: E402  (Ansible: DOCUMENTATION comes before the imports)
"""nnos_device: is the device online, and what runs on it (facts; never fails for an offline
device: says so, for the play to skip it and report). With ``scrape_token``: the device is given
the fleet's read-only scrape token (the one Prometheus's credentials_file holds) unless it has it
already (compared by sha256: the device never says its token); check mode says whether it would."""
from __future__ import annotations

DOCUMENTATION = r"""
module: nnos_device
short_description: Whether an nnos device answers, and what it runs; its scrape token
options:
  url: {description: "The device's API (http://ADDRESS:8080).", required: true, type: str}
  token: {description: The device's API token., required: true, type: str, no_log: true}
  scrape_token:
    description: "The fleet's read-only token for /metrics (24–256 bearer-token characters)."
    type: str
    no_log: true
  timeout: {description: Seconds to wait for an answer., type: float, default: 5}
"""

import hashlib
import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nnos.fleet.plugins.module_utils.nnos_api import ApiError, call, lacks


def scrape_token(m, p: dict, version: str | None) -> bool:
    """Whether the device's scrape token changed (or would, in check mode)."""
    try:
        have = call(p["url"], p["token"], path="/v1/system/scrape-token", timeout=p["timeout"])
    except ApiError as e:
        if e.status == 404:
            m.fail_json(msg=lacks(p["url"], version, "scrape token"), online=True, nnos_version=version)
        raise
    if have.get("sha256") == hashlib.sha256(p["scrape_token"].encode()).hexdigest():
        return False
    if not m.check_mode:
        call(p["url"], p["token"], "PUT", "/v1/system/scrape-token", json.dumps({"token": p["scrape_token"]}).encode(),
             timeout=p["timeout"], content_type="application/json")
    return True


def main():
    m = AnsibleModule(argument_spec={"url": {"required": True}, "token": {"required": True, "no_log": True},
                                     "scrape_token": {"no_log": True}, "timeout": {"type": "float", "default": 5.0}},
                      supports_check_mode=True)
    p = m.params
    try:
        status = call(p["url"], p["token"], path="/v1/status", timeout=p["timeout"])
        version = call(p["url"], p["token"], path="/v2", timeout=p["timeout"]).get("version")
        changed = bool(p["scrape_token"]) and scrape_token(m, p, version)
    except ApiError as e:
        if e.offline:
            m.exit_json(changed=False, online=False, msg=str(e))
        m.fail_json(msg=str(e), online=True)
    loop = status.get("loop") or {}
    m.exit_json(changed=changed, online=True, nnos_version=version, active_model=(status.get("store") or {}).get("active"),
                loop_mode=loop.get("mode"), failsafe=loop.get("failsafe"), update=status.get("update"),
                msg=("would set" if m.check_mode else "set") + " the scrape token" if changed else "")


if __name__ == "__main__":
    main()
