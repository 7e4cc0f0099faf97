"""nnos/live.py against the in-process cart-pole loop's real rings: every tick's channels and loop
record as topics, decimated or only the newest for a live view, and the text topics on change."""
from __future__ import annotations

import pytest

from nnos.live import SCHEMAS, Feed
from tests.support.live import Live


@pytest.fixture
def live(tmp_path):
    lv = Live(tmp_path)
    yield lv
    lv.close()


def _by_topic(msgs):
    out = {}
    for topic, t, m in msgs:
        out.setdefault(topic, []).append((t, m))
    return out


def test_every_tick_once_with_the_values_the_loop_read_and_sent(live):
    live.ticks(3)
    feed = Feed(str(live.run))
    try:
        assert dict(feed.topics)["/cartpole/cart"] == "nnos.Channel" and set(dict(feed.topics).values()) <= set(SCHEMAS)
        live.ticks(20)
        got = _by_topic(feed.poll())
        assert feed.polled == 20 and feed.poll() == [], "from the last poll on, nothing twice"
        ticks = [m["tick"] for _, m in got["/loop"]]
        assert ticks == list(range(3, 23))
        for _, m in got["/cartpole/force"]:
            assert m["values"] == pytest.approx([live.sent[m["tick"]]], rel=1e-6) and m["units"] == "N"
        for _, m in got["/cartpole/cart"]:
            assert m["values"] == pytest.approx(live.fed[m["tick"]][0].tolist(), rel=1e-6)
            assert m["names"] == ["position", "velocity"]
        assert [m["text"] for _, m in got["/model"]] == [live.store.state()["active"]], "the model, once"
    finally:
        feed.close()


def test_a_live_view_takes_every_kth_tick_or_only_the_newest(live):
    feed = Feed(str(live.run))
    try:
        live.ticks(30)
        ticks = [m["tick"] for topic, _, m in feed.poll(every=10) if topic == "/loop"]
        assert ticks == [0, 10, 20]
        live.ticks(7)
        newest = _by_topic(feed.poll(latest=True))
        assert [m["tick"] for _, m in newest["/loop"]] == [36] and len(newest["/cartpole/pole"]) == 1
        assert feed.polled == 7
    finally:
        feed.close()


def test_an_unknown_topic_is_refused_naming_the_boards(live):
    with pytest.raises(ValueError, match=r"no such channel \['/nope'\]; the board's: \['/cartpole/cart'"):
        Feed(str(live.run), topics=["/nope"])
