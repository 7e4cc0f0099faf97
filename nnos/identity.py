"""Who this device is: an id made once and kept in its data partition (the same across updates
and reboots): D-Bus's machine id on the image, the device_id label of /metrics."""
from __future__ import annotations

import os
import uuid

from .fsutil import atomic_write


def device_id(data: str) -> str:
    """The device's id (32 hex digits), made once and kept in the data partition: the same
    across updates and reboots (D-Bus's machine id, /metrics' device_id)."""
    path = os.path.join(data, "machine-id")
    try:
        with open(path) as f:
            mid = f.read().strip()
    except OSError:
        mid = ""
    if len(mid) == 32:
        return mid
    new, tmp = uuid.uuid4().hex, f"{path}.{os.getpid()}"
    atomic_write(tmp, (new + "\n").encode())
    try:
        if mid:
            os.replace(tmp, path)                 # a damaged one: replaced
        else:
            os.link(tmp, path)                    # the first: two processes at first boot agree on one
    except FileExistsError:
        return device_id(data)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return new
