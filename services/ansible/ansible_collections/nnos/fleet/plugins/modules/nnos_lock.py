#!/usr/bin/python
# ruff: noqa: E402  (Ansible: DOCUMENTATION comes before the imports)
"""nnos_lock: one rollout at a time. ``present`` takes the lock file for the ansible-playbook
run that asks (its process id in the file) and fails, naming the other run, while a live run
holds it; a lock whose run is gone (killed, or stopped by a failed batch) is taken over and
said so. ``absent`` gives it back."""
from __future__ import annotations

DOCUMENTATION = r"""
module: nnos_lock
short_description: One nnos rollout at a time
options:
  path: {description: The lock file., type: path, default: /tmp/nnos-rollout.lock}
  state: {description: present takes it, absent gives it back., type: str, choices: [present, absent], default: present}
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule


def playbook_pid() -> int:
    """The ansible-playbook run this module works for: the outermost ancestor that is one (its
    workers, forked from it, carry the same command line)."""
    pid, found = os.getppid(), None
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ansible-playbook" in f.read():
                    found = pid
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found or os.getppid()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main():
    m = AnsibleModule(argument_spec={"path": {"type": "path", "default": "/tmp/nnos-rollout.lock"},
                                     "state": {"default": "present", "choices": ["present", "absent"]}},
                      supports_check_mode=True)
    path, me = m.params["path"], playbook_pid()
    try:
        with open(path) as f:
            held = json.load(f)
    except FileNotFoundError:
        held = None
    except ValueError:
        held = {"pid": -1}
    if m.params["state"] == "absent":
        if held and held.get("pid") == me and not m.check_mode:
            os.unlink(path)
        m.exit_json(changed=bool(held and held.get("pid") == me))
    if held and held.get("pid") != me and alive(held.get("pid", -1)):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(held.get("at", 0)))
        m.fail_json(msg=f"a rollout is already running (ansible-playbook pid {held['pid']}, since {since}, lock {path}); "
                        "wait for it or stop it")
    taken_over = bool(held and held.get("pid") != me)
    if not m.check_mode:
        tmp = f"{path}.{me}"
        with open(tmp, "w") as f:
            json.dump({"pid": me, "at": time.time()}, f)
        if held is None:
            try:
                os.link(tmp, path)               # two runs starting at once: one wins
            except FileExistsError:
                os.unlink(tmp)
                m.fail_json(msg=f"a rollout started at the same moment holds {path}")
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    m.exit_json(changed=True, pid=me, msg=f"took over the lock of a run that is gone (pid {held.get('pid')})" if taken_over
                else f"locked {path}")


if __name__ == "__main__":
    main()
