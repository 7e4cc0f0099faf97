"""The loop's control socket: a request is answered, or its client is told why not."""
from __future__ import annotations

import threading

import pytest

from nnos.runtime.control import ControlError, ControlServer, request
from tests.support.timing import wait_until


def serve(path: str, then) -> threading.Thread:
    """A server at ``path`` that takes one request and hands it to ``then(server, msg, addr)``."""
    server = ControlServer(path)

    def run():
        got = wait_until(server.receive, 30, "a request on the control socket")
        then(server, *got)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_request_gets_its_answer(tmp_path):
    path = str(tmp_path / "loop.sock")

    def answer(server, msg, addr):
        server.reply(addr, {"ok": True, "id": msg["id"], "echo": msg["cmd"]})
        server.close()
    t = serve(path, answer)
    assert request(path, {"cmd": "status", "id": 7}, timeout=30) == {"ok": True, "id": 7, "echo": "status"}
    t.join()


def test_a_loop_restarted_before_it_answered_is_said_at_once_not_after_the_timeout(tmp_path):
    """Regression: a loop killed by its watchdog during an activation never answers; the control
    plane waited its whole 120 s for it, and a client with the same timeout gave up first."""
    path = str(tmp_path / "loop.sock")
    successor = []

    def restart(server, msg, addr):
        server.sock.close()                         # killed: the socket file stays behind
        successor.append(ControlServer(path))       # the next loop binds its own at the same path
    t = serve(path, restart)
    with pytest.raises(ControlError, match="stopped or restarted before it answered 'activate'"):
        request(path, {"cmd": "activate", "id": 1}, timeout=600)
    t.join()
    successor[0].close()


def test_a_loop_that_stopped_before_it_answered_is_said(tmp_path):
    path = str(tmp_path / "loop.sock")
    t = serve(path, lambda server, msg, addr: server.close())
    with pytest.raises(ControlError, match="stopped or restarted"):
        request(path, {"cmd": "activate", "id": 1}, timeout=600)
    t.join()


def test_a_silent_loop_times_out_with_the_command_named(tmp_path):
    path = str(tmp_path / "loop.sock")
    server = ControlServer(path)
    with pytest.raises(ControlError, match="did not answer 'status' within 1.0 s"):
        request(path, {"cmd": "status", "id": 1}, timeout=1.0)
    server.close()


def test_nothing_listening_is_said(tmp_path):
    with pytest.raises(ControlError, match="nothing is listening"):
        request(str(tmp_path / "none.sock"), {"cmd": "status", "id": 1}, timeout=5)
