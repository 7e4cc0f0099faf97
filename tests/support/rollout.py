"""A model rolled out with the Ansible collection's playbook, the way the fleet tests run it: a
rollout that a host stall rolled back (this machine, not the model) is run again, reported."""
from __future__ import annotations

import json
import os
import re
import subprocess

from tests.support.paths import ROOT
from tests.support.timing import report_retry, scaled

PLAYBOOK = os.path.join(ROOT, "services", "ansible", "rollout.yml")
# A host stall can overrun a tick in probation or starve a simulated device's process until its
# sensor is stale, and roll a good model back, or miss ticks; the alerts that follow would hold
# every later rollout to this fleet for minutes. The tests accept those two (as an operator
# would with ignore_alerts), retry a rollout a stall rolled back (reported), and leave every
# other alert in force (the alert test's is one).
IGNORE = json.dumps({"ignore_alerts": ["NnosDeviceDown", "NnosModelRolledBack", "NnosLoopMisses"]})
# a stalled loop overruns its tick; a stalled simulator leaves its sensor stale
STALL = re.compile(r"was rolled back: (overrun: tick took \d+ µs|sensor \S+ stale \(no reading for [\d.]+ s)")


def playbook(inventory: str, model: str, *extra: str, lock: str = "", probation_s: float = 1) -> tuple[int, str, dict]:
    """ansible-playbook's exit status, output and recap {host: {ok, changed, failed, ...}} — the
    changes summed over the attempts a host stall made it repeat."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "services", "ansible", "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    args = ["ansible-playbook", "-i", inventory, PLAYBOOK, "-e", f"model={model}", "-e", f"probation_s={probation_s:g}",
            "-e", IGNORE, "-e", f"lock={lock or os.path.join(os.path.dirname(inventory), 'rollout.lock')}", *extra]
    changed: dict = {}
    for attempt in range(3):
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=scaled(900))
        out = r.stdout + r.stderr
        recap = {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
                 for m in re.finditer(r"^(\S+)\s+: (ok=.*)$", out, re.M)}
        for host, counts in recap.items():
            changed[host] = changed.get(host, 0) + counts["changed"]
        stall = STALL.search(out)
        if r.returncode == 0 or stall is None or attempt == 2:
            break
        report_retry("fleet rollout", f"a probation rolled back by a host stall: {stall.group(0)}")
    for host, counts in recap.items():
        counts["changed"] = changed[host]
    return r.returncode, out, recap
