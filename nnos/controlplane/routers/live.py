"""Live data: ``WS /v1/live`` (the dashboard's plots: every channel with its names and units,
the loop's mode and lateness, in batches) and ``WS /v1/foxglove`` (the Foxglove WebSocket
protocol, relayed to the supervisor's Foxglove server on 127.0.0.1 once the token is checked).
Both read the loop's rings through nnos/live.py; neither touches the loop."""
from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ... import flags
from ...live import Feed
from ..deps import ws_token_ok

router = APIRouter(tags=["live"])
MAX_POINTS_PER_S = 200          # a fast loop's ticks are decimated to this many points a second


def _layout(feed: Feed, st) -> dict:
    c = feed.tel.counters()
    return {"type": "layout", "board": st.board.name, "rate_hz": st.board.rate_hz,
            "channels": [{k: t[k] for k in ("topic", "device", "channel", "kind", "names", "units", "range")}
                         for t in feed.layout],
            "active": c["active"] or None, "swaps": c["swaps"]}


def _batch(messages: list, every: int) -> dict | None:
    """Messages of one poll as columns: t (s, CLOCK_MONOTONIC), tick, mode, lateness, and each
    channel's values; every ``every``-th tick only."""
    ticks: dict[int, dict] = {}
    for topic, t, m in messages:
        if "tick" not in m or m["tick"] % every:
            continue
        row = ticks.setdefault(m["tick"], {"t": t / 1e9, "channels": {}})
        if topic == "/loop":
            row.update(mode=m["mode"], lateness_us=m["lateness_us"], compute_us=m["compute_us"])
        else:
            row["channels"][topic] = m["values"]
    rows = [(k, r) for k, r in sorted(ticks.items()) if "mode" in r]
    if not rows:
        return None
    topics = rows[0][1]["channels"].keys()
    return {"type": "ticks", "tick": [k for k, _ in rows], "t": [r["t"] for _, r in rows],
            "mode": [r["mode"] for _, r in rows], "lateness_us": [r["lateness_us"] for _, r in rows],
            "compute_us": [r["compute_us"] for _, r in rows],
            "channels": {topic: [r["channels"].get(topic) for _, r in rows] for topic in topics}}


def _open_feed(st) -> Feed | None:
    try:
        return Feed(st.settings.run)
    except (OSError, ValueError):
        return None


@router.websocket("/v1/live")
async def live(ws: WebSocket, hz: float = 10.0):
    """``hz`` (0.5–30) batches a second. The token as for /v1/telemetry (header or ``token`` query)."""
    st = ws.app.state.nnos
    if not ws_token_ok(ws, st.token):
        await ws.close(code=1008)
        return
    await ws.accept()
    closed = asyncio.Event()
    watcher = asyncio.ensure_future(_until_closed(ws, closed))
    hz, feed, ino = min(max(hz, 0.5), 30.0), None, None
    try:
        while not closed.is_set():
            path = os.path.join(st.settings.run, "channels")
            now = os.stat(path).st_ino if os.path.exists(path) else None
            if feed is None or now != ino:
                if feed is not None:
                    feed.close()
                feed, ino = _open_feed(st), now
                await ws.send_json(_layout(feed, st) if feed else {"type": "down", "detail": "the loop has not started"})
            if feed is not None:
                await _send_ticks(ws, feed)
            try:
                await asyncio.wait_for(closed.wait(), 1.0 / hz)
            except asyncio.TimeoutError:
                pass
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    finally:
        watcher.cancel()
        if feed is not None:
            feed.close()


async def _until_closed(ws: WebSocket, closed: asyncio.Event) -> None:
    """The client's side: nothing is expected from it but its close."""
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        closed.set()


async def _send_ticks(ws: WebSocket, feed: Feed) -> None:
    c = feed.tel.counters()
    every = max(1, int(c["rate_mhz"] / 1000 / MAX_POINTS_PER_S + 0.999))
    msg = _batch(feed.poll(every=every), every)
    if msg is not None:
        msg.update(active=c["active"] or None, swaps=c["swaps"], failsafe_reason=c["failsafe_reason"] or None,
                   loop_mode=c["mode"])
        await ws.send_json(msg)


@router.websocket("/v1/foxglove")
async def foxglove(ws: WebSocket):
    """The Foxglove app's "Foxglove WebSocket" connection: ws://DEVICE:PORT/v1/foxglove?token=TOKEN.
    The token is checked before the upgrade; then every frame is relayed both ways, unchanged,
    to the Foxglove server (nnos/foxglove_server.py) with the subprotocol the client asked for."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    st = ws.app.state.nnos
    if not ws_token_ok(ws, st.token):
        await ws.close(code=1008)
        return
    asked = list(ws.scope.get("subprotocols") or [])
    try:
        upstream = await connect(f"ws://127.0.0.1:{flags.FOXGLOVE_PORT.get()}", subprotocols=asked or None,
                                 max_size=None, open_timeout=5)
    except (OSError, asyncio.TimeoutError, ConnectionClosed, InvalidHandshake) as e:
        why = f"no Foxglove server on this device (NNOS_FOXGLOVE=1 starts it): {type(e).__name__}"
        await ws.accept(subprotocol=asked[0] if asked else None)       # so that the client hears why
        await ws.close(code=1013, reason=why[:120])
        return
    await ws.accept(subprotocol=upstream.subprotocol)

    async def down():
        async for frame in upstream:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_text(frame))

    async def up():
        while True:
            m = await ws.receive()
            if m["type"] == "websocket.disconnect":
                return
            await upstream.send(m["bytes"] if m.get("bytes") is not None else m["text"])

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await upstream.close()
        try:
            await ws.close()
        except RuntimeError:
            pass
