#!/usr/bin/python
# ruff: noqa: E402  (Ansible: DOCUMENTATION comes before the imports)
"""nnos_device: is the device online, and what runs on it (facts; never fails for an offline
device: says so, for the play to skip it and report)."""
from __future__ import annotations

DOCUMENTATION = r"""
module: nnos_device
short_description: Whether an nnos device answers, and what it runs
options:
  url: {description: "The device's API (http://ADDRESS:8080).", required: true, type: str}
  token: {description: The device's API token., required: true, type: str, no_log: true}
  timeout: {description: Seconds to wait for an answer., type: float, default: 5}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nnos.fleet.plugins.module_utils.nnos_api import ApiError, call


def main():
    m = AnsibleModule(argument_spec={"url": {"required": True}, "token": {"required": True, "no_log": True},
                                     "timeout": {"type": "float", "default": 5.0}}, supports_check_mode=True)
    p = m.params
    try:
        status = call(p["url"], p["token"], path="/v1/status", timeout=p["timeout"])
        version = call(p["url"], p["token"], path="/v2", timeout=p["timeout"]).get("version")
    except ApiError as e:
        if e.offline:
            m.exit_json(changed=False, online=False, msg=str(e))
        m.fail_json(msg=str(e), online=True)
    loop = status.get("loop") or {}
    m.exit_json(changed=False, online=True, nnos_version=version, active_model=(status.get("store") or {}).get("active"),
                loop_mode=loop.get("mode"), failsafe=loop.get("failsafe"), update=status.get("update"))


if __name__ == "__main__":
    main()
