"""The health-gated commit, once a boot (`python -m nnos.update.health`, one line in the
supervisor's table). A slot booted for the first time after an update is on probation: it is
marked good (`rauc status mark-good`, which also resets its boot-attempt counter) only once the
loop has ticked for the probation time without failing safe, on the active model, and the control
plane answered all along. If that fails the slot is marked bad and the device reboots into the
other one, whose own boot reports why (DATA/update.json). A slot already kept is marked good as
soon as the loop ticks and the API answers — so only a good boot resets a counter, and a power
cut during a new slot's first boot never spends the old slot's attempts.

The update record says what to expect: "installed"/"probation" with this slot as its target → on
probation; the same with the other slot booted → GRUB gave up on the new slot (it never came up
healthy within its attempts): rolled back."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.request

from .. import flags
from ..store import ModelStore, StoreError
from ..timeline import stamp
from . import rauc, record


class Unhealthy(Exception):
    pass


def ask_status(port: int, token: str, timeout: float = 5.0) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def healthy_for(seconds: float, status, deadline_s: float, poll_s: float = 1.0, clock=time.monotonic) -> None:
    """Until the loop has ticked ``seconds`` in a row without a failsafe, on its active model, the
    API answering every poll; Unhealthy(why) when a failsafe or an unanswered poll breaks it, or
    ``deadline_s`` passes first."""
    start, since, last_ticks = clock(), None, None
    while True:
        now = clock()
        if now - start > deadline_s:
            raise Unhealthy(f"not healthy for {seconds:.0f} s within {deadline_s:.0f} s of the boot")
        try:
            st = status()
        except OSError as e:
            if since is not None:
                raise Unhealthy(f"the control plane stopped answering ({e})") from e
            time.sleep(poll_s)
            continue
        loop = st.get("loop") or {}
        if loop.get("failsafe"):
            raise Unhealthy(f"the loop failed safe: {loop.get('failsafe_reason') or loop.get('failsafe')}")
        ticking = loop.get("mode") == "running" and loop.get("ticks") not in (None, last_ticks) \
            and loop.get("active") and loop.get("active") == (st.get("store") or {}).get("active")
        last_ticks = loop.get("ticks")
        if ticking:
            since = now if since is None else since
            if now - since >= seconds:
                return
        elif since is not None:
            raise Unhealthy(f"the loop stopped ticking on its active model (mode {loop.get('mode')})")
        time.sleep(poll_s)


def gate(data: str, status, probation_s: float, deadline_s: float, say=print, reboot=lambda: os.kill(1, signal.SIGTERM)) -> str:
    """This boot's verdict: "good", "committed" (an already kept slot), "rolled back".
    ``probation_s``: unless the update asked for its own."""
    booted = rauc.status()["booted"]
    if booted is None:                        # booted without the boot loader's rauc.slot=: no slot to judge
        say("update: RAUC cannot tell which slot booted (no rauc.slot= on the kernel command line): no health gate")
        return "not judged"
    if record.interrupted(data):
        say(f"update: {record.summary(record.load(data))}")
    rec = record.load(data)
    pending = rec is not None and rec["state"] in ("installed", "probation")
    if pending and rec.get("to", {}).get("slot") != booted:
        why = (f"slot {rec['to'].get('slot')} did not come up healthy within its boot attempts; "
               f"the boot loader went back to slot {booted}")
        rauc.mark("bad", "other")                # not tried again
        record.change(data, "rolled back", why=why, at=time.time())
        say(f"update: rolled back: {why}")
    if not pending or rec.get("to", {}).get("slot") != booted:
        healthy_for(0, status, deadline_s)
        rauc.mark("good")
        drop_old_plans(data, say)
        return "committed"
    probation_s = probation_of(rec, probation_s)
    record.change(data, "probation", probation_s=probation_s, booted_at=time.time())
    say(f"update: slot {booted} ({rec['to'].get('version')}) on probation for {probation_s:.0f} s")
    try:
        healthy_for(probation_s, status, deadline_s)
    except Unhealthy as e:
        record.change(data, "rolled back", why=str(e), at=time.time())
        say(f"update: slot {booted} failed its probation ({e}): marked bad, rebooting into the other slot")
        rauc.mark("bad")
        reboot()
        return "rolled back"
    rauc.mark("good")
    record.change(data, "good", at=time.time())
    drop_old_plans(data, say)
    say(f"update: slot {booted} ({rec['to'].get('version')}) is good: kept")
    return "good"


def drop_old_plans(data: str, say) -> None:
    """This slot is kept: plans recompiled for its nnos replace the old ones for good."""
    try:
        gone = ModelStore(data).commit_superseded()
    except (OSError, StoreError) as e:
        say(f"update: the old plans could not be removed yet ({e}); they are kept")
        return
    if gone:
        say(f"update: {len(gone)} plan(s) of the old format removed: their recompiled ones are kept")


def probation_of(rec: dict, default: float) -> float:
    """The probation the update asked for (0 included), else ``default``."""
    return default if rec.get("probation_s") is None else float(rec["probation_s"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="nnos.update.health")
    ap.add_argument("--data", required=True)
    ap.add_argument("--port", type=int, default=flags.API_PORT.get())
    a = ap.parse_args(argv)
    with open(os.path.join(a.data, "token")) as f:
        token = f.read().strip()
    for _ in range(120):                       # RAUC's service registers on the bus after it starts
        try:
            rauc.status()
            break
        except rauc.UpdateError:
            time.sleep(1)
    verdict = gate(a.data, lambda: ask_status(a.port, token), flags.UPDATE_PROBATION_S.get(),
                   flags.UPDATE_DEADLINE_S.get(), say=stamp)
    record.judge(os.path.join(a.data, "run"), verdict)
    stamp(f"update: this boot is {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
