#!/usr/bin/python
# ruff: noqa: E402  (Ansible: DOCUMENTATION comes before the imports)
"""nnos_alerts: fail while Prometheus has alerts firing for the given devices (services/
prometheus's rules), naming each; a rollout asks before each batch (the whole fleet) and after
it (the batch). A device that is down is not a reason to stop (it is skipped and reported).
An empty Prometheus URL skips the check (and says so)."""
from __future__ import annotations

DOCUMENTATION = r"""
module: nnos_alerts
short_description: Stop a rollout while Prometheus alerts fire on nnos devices
options:
  prometheus: {description: "Prometheus's URL (empty: no check).", type: str, default: ""}
  devices:
    description: "The devices' API URLs (http://ADDRESS:8080): alerts whose instance is one of them count."
    type: list
    elements: str
    required: true
  severities: {description: The severities that stop a rollout., type: list, elements: str, default: [critical, warning]}
  ignore:
    description: Alerts that do not stop a rollout (an offline device is skipped and reported instead).
    type: list
    elements: str
    default: [NnosDeviceDown]
"""

import json
import urllib.parse
import urllib.request

from ansible.module_utils.basic import AnsibleModule


def main():
    m = AnsibleModule(argument_spec={"prometheus": {"default": ""},
                                     "devices": {"type": "list", "elements": "str", "required": True},
                                     "severities": {"type": "list", "elements": "str", "default": ["critical", "warning"]},
                                     "ignore": {"type": "list", "elements": "str", "default": ["NnosDeviceDown"]}},
                      supports_check_mode=True)
    p = m.params
    if not p["prometheus"]:
        m.exit_json(changed=False, firing=[], msg="no Prometheus given: alerts not checked")
    instances = {urllib.parse.urlsplit(u).netloc: u for u in p["devices"]}
    try:
        with urllib.request.urlopen(p["prometheus"].rstrip("/") + "/api/v1/alerts", timeout=10) as r:
            alerts = json.loads(r.read())["data"]["alerts"]
    except (OSError, ValueError, KeyError) as e:
        m.fail_json(msg=f"Prometheus at {p['prometheus']} did not say which alerts fire ({e}): the rollout stops "
                        "rather than go on blind")
    firing = [{"alert": a["labels"].get("alertname"), "device": instances[a["labels"]["instance"]],
               "summary": a.get("annotations", {}).get("summary", "")}
              for a in alerts if a.get("state") == "firing" and a["labels"].get("instance") in instances
              and a["labels"].get("severity") in p["severities"] and a["labels"].get("alertname") not in p["ignore"]]
    if firing:
        m.fail_json(msg="alerts fire: " + "; ".join(f"{f['alert']} on {f['device']} ({f['summary']})" for f in firing),
                    firing=firing)
    m.exit_json(changed=False, firing=[], msg=f"no alerts on {len(instances)} device(s)")


if __name__ == "__main__":
    main()
