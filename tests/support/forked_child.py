"""`python -m tests.support.forked_child CODE`: what a process started by the fork server sees
of itself (and whether the module FORKED_CHILD_WATCH names was imported before it started), as one
JSON line on stderr, then exit with CODE (`sleep`: print its pid on stdout
and sleep)."""
from __future__ import annotations

import json
import os
import sys
import time

if __name__ == "__main__":
    if sys.argv[1] == "sleep":
        print(os.getpid(), flush=True)
        time.sleep(600)
    with open(f"/proc/{os.getpid()}/comm") as f:
        comm = f.read().strip()
    print(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "nice": os.nice(0),
                      "cpus": sorted(os.sched_getaffinity(0)), "argv": sys.argv[1:], "comm": comm,
                      "cmdline": open(f"/proc/{os.getpid()}/cmdline").read().replace("\0", " ").strip(),
                      "env": os.environ.get("FORKED_CHILD_ENV"), "fds": sorted(int(x) for x in os.listdir("/proc/self/fd")),
                      "numpy": "numpy" in sys.modules,
                      "watched": os.environ.get("FORKED_CHILD_WATCH", "") in sys.modules}), file=sys.stderr, flush=True)
    sys.exit(int(sys.argv[1]))
