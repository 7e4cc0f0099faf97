"""What the loop answers on its control socket: one handler per command, in one table. A
handler returns the reply, or None when a job answers later (activate, shadow, reload)."""
from __future__ import annotations


def status(loop, msg, addr) -> dict:
    return {"ok": True, "failsafe": loop.safety.active, "reason": loop.safety.reason, "in_use": loop.in_use(),
            "active": loop.active.id if loop.active else None, "lost": sorted(loop.io.lost),
            "shadow": loop.shadow.id if loop.shadow else None, "tick": loop.tick_no, "devices": loop.io.status()}


def activate(loop, msg, addr) -> dict | None:
    if "activate" in loop.waiting or loop.pending is not None or loop.probation_end >= 0 or loop.committing:
        return {"ok": False, "error": "another activation is in progress"}
    loop.waiting["activate"] = (addr, msg.get("id"))
    loop.jobs.append(("activate", "activate", loop._activate_job(str(msg.get("model")), msg)))
    return None


def shadow(loop, msg, addr) -> dict | None:
    if msg.get("model") is not None and loop.board.infer_every > 1:
        return {"ok": False, "error": f"shadow runs are for boards that infer every tick; this one infers every "
                f"{loop.board.infer_every} ticks"}
    if msg.get("model") is None:
        loop.shadow = None
        loop._publish_models()
        return {"ok": True, "shadow": None}
    loop.waiting["shadow"] = (addr, msg.get("id"))
    loop.jobs.append(("shadow", "shadow", loop._shadow_job(str(msg["model"]))))
    return None


def device(loop, msg, addr) -> dict:
    """From the hotplug watcher: a board device was removed or (re)appeared."""
    name = msg.get("device")
    if name not in loop.devices:
        return {"ok": False, "error": f"no device {name!r} on this board"}
    if msg.get("action") == "remove":
        loop.io.removed(name)
    else:
        loop.io.appeared(name, msg.get("path"))
    return {"ok": True}


def reload_board(loop, msg, addr) -> None:
    loop.waiting["reload_board"] = (addr, msg.get("id"))
    loop.jobs.append(("reload_board", "reload_board", loop._reload_board_job()))
    return None


def release(loop, msg, addr) -> dict:
    loop.safety.request_release()
    return {"ok": True, "failsafe": loop.safety.active}


def _armable(loop, msg) -> list[str] | dict:
    """The devices a request names (``device``), or every device with torque."""
    names = [msg["device"]] if msg.get("device") else [n for n, d in loop.devices.items() if d.armable]
    for n in names:
        if n not in loop.devices or not loop.devices[n].armable:
            return {"ok": False, "error": f"no device {n!r} with torque on this board; those with torque: "
                    f"{', '.join(k for k, d in loop.devices.items() if d.armable) or 'none'}"}
    if not names:
        return {"ok": False, "error": "this board has no device with torque to arm"}
    return names


def arm(loop, msg, addr) -> dict:
    from nnos_hardware.errors import HardwareError
    names = _armable(loop, msg)
    if isinstance(names, dict):
        return names
    for n in names:
        if n in loop.io.lost:
            return {"ok": False, "error": f"{n}: lost (unplugged or not answering); it cannot be armed"}
        try:
            loop.arm(n)
        except HardwareError as e:
            return {"ok": False, "error": str(e), "armed": [k for k in names if loop.devices[k].armed]}
    return {"ok": True, "armed": names}


def disarm(loop, msg, addr) -> dict:
    names = _armable(loop, msg)
    if isinstance(names, dict):
        return names
    for n in names:
        loop.disarm(n)
    return {"ok": True, "disarmed": names}


def calibration(loop, msg, addr) -> dict:
    """The stored calibration changed (PUT /v1/calibration): apply it to the disarmed buses."""
    from nnos_hardware.errors import HardwareError
    try:
        applied = loop.apply_calibration()
    except HardwareError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True, "applied": applied}


def stop(loop, msg, addr) -> dict:
    loop.stop = True
    return {"ok": True}


HANDLERS = {"status": status, "activate": activate, "shadow": shadow, "device": device,
            "reload_board": reload_board, "release": release, "stop": stop, "arm": arm, "disarm": disarm,
            "calibration": calibration}


def handle(loop, msg: dict, addr) -> dict | None:
    fn = HANDLERS.get(msg.get("cmd"))
    if fn is None:
        return {"ok": False, "error": f"unknown command {msg.get('cmd')!r}; expected one of {', '.join(HANDLERS)}"}
    return fn(loop, msg, addr)
