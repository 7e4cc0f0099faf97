"""The collection's own logic, run by the Python Ansible runs under (Debian's ansible-core is not
in the virtual environment): a device kept on a version is not updated again after a reboot
(its health gate says "committed" then, not "good")."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.skipif(not shutil.which("ansible-playbook"), reason="needs ansible-core (./build.sh setup)")


def test_a_kept_update_stays_kept_across_reboots():
    code = """
from ansible_collections.nnos.fleet.plugins.modules.nnos_update import kept
v = "0.2.0"
assert kept({"version": v, "state": "good", "this_boot": "good"}, v)
assert kept({"version": v, "state": "good", "this_boot": "committed"}, v)          # rebooted since
assert not kept({"version": v, "state": "probation", "this_boot": None}, v)
assert not kept({"version": v, "state": "rolled back", "this_boot": "committed"}, v)
assert not kept({"version": "0.1.0", "state": "good", "this_boot": "committed"}, v)
print("ok")
"""
    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "services", "ansible")))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
