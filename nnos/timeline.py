"""The boot timeline on the console: every line is `[nnos  12.34s] event`, the time counted from
the kernel's start (CLOCK_BOOTTIME), so kernel → initramfs → init → first tick → control plane
ready can be read off one boot log (and parsed by the boot test and benchmark)."""
from __future__ import annotations

import os
import sys
import time

# (re is imported by parse: PID 1 stamps "init: started" before anything it can leave for later)
PATTERN = r"\[nnos\s+(\d+\.\d+)s\] (.*)"


def since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def stamp(event: str, stream=None, monotonic_ns: int | None = None) -> None:
    """One line of the timeline, at now or at ``monotonic_ns`` (a CLOCK_MONOTONIC time another
    process recorded: the loop's first tick, noticed later by the supervisor)."""
    at = since_boot()
    if monotonic_ns is not None:
        at -= time.monotonic() - monotonic_ns / 1e9      # BOOTTIME runs ahead of MONOTONIC only by suspends
    line = f"[nnos {at:7.2f}s] {event}\n"
    stream = stream or sys.stderr
    try:
        stream.write(line)
        stream.flush()
    except (OSError, ValueError):
        pass


def on_console() -> bool:
    """True when this process is the device's init or runs under it (the image)."""
    return os.getpid() == 1 or os.environ.get("NNOS_INIT") == "1"


def parse(text: str) -> list[tuple[float, str]]:
    """Timeline events from a console log, in order."""
    import re
    return [(float(m.group(1)), m.group(2).strip()) for m in re.finditer(PATTERN, text)]
