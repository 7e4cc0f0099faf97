"""image/lib/http_once.py, what a booted image's file address answers with (qemu's guestfwd runs
it per connection): files of the served folder and its sub-folders (a casync chunk store), never
a file outside it, each answer logged with the bytes sent."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

HTTP_ONCE = os.path.join(ROOT, "image", "lib", "http_once.py")


def ask(folder, log, target: str, method: str = "GET") -> tuple[str, bytes]:
    r = subprocess.run([sys.executable, HTTP_ONCE, str(folder), str(log)], check=True, capture_output=True, timeout=30,
                       input=f"{method} {target} HTTP/1.1\r\nHost: 10.0.2.100\r\nAccept: */*\r\n\r\n".encode())
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    return head.decode().split("\r\n")[0], body


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    (folder / "b.castr" / "ab12").mkdir(parents=True)
    (folder / "b.raucb").write_bytes(b"bundle" * 100)
    (folder / "b.castr" / "ab12" / "ab12cd.cacnk").write_bytes(b"chunk")
    (tmp_path / "secret").write_text("not served")
    (folder / "link").symlink_to(tmp_path / "secret")
    return folder, tmp_path / "served.log"


def test_files_and_sub_folders_are_served_and_logged(served):
    folder, log = served
    assert ask(folder, log, "/b.raucb") == ("HTTP/1.0 200 OK", b"bundle" * 100)
    assert ask(folder, log, "http://10.0.2.100/b.castr/ab12/ab12cd.cacnk") == ("HTTP/1.0 200 OK", b"chunk")
    assert log.read_text().splitlines() == ["200 600 /b.raucb", "200 5 http://10.0.2.100/b.castr/ab12/ab12cd.cacnk"]


@pytest.mark.parametrize("target", ["/../secret", "/b.castr/../../secret", "/%2e%2e/secret", "/link", "/b.castr",
                                    "/missing", "/"])
def test_nothing_outside_the_folder_and_no_folders(served, target):
    folder, log = served
    assert ask(folder, log, target) == ("HTTP/1.0 404 Not Found", b"")
    assert log.read_text() == f"404 0 {target}\n"


def test_only_get(served):
    folder, log = served
    assert ask(folder, log, "/b.raucb", "POST")[0] == "HTTP/1.0 404 Not Found"
