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


def stop(loop, msg, addr) -> dict:
    loop.stop = True
    return {"ok": True}


HANDLERS = {"status": status, "activate": activate, "shadow": shadow, "device": device,
            "reload_board": reload_board, "release": release, "stop": stop}


def handle(loop, msg: dict, addr) -> dict | None:
    fn = HANDLERS.get(msg.get("cmd"))
    if fn is None:
        return {"ok": False, "error": f"unknown command {msg.get('cmd')!r}; expected one of {', '.join(HANDLERS)}"}
    return fn(loop, msg, addr)
