"""The device's own flags (/data/config/nnos.env on the image): what the supervisor it starts
runs with — NNOS_FOXGLOVE=1 turns the Foxglove server on — and every wrong line said, left out."""
from __future__ import annotations

import nnos.boot.init as init
from nnos import flags


def test_known_flags_are_read_and_checked_and_the_rest_said(tmp_path):
    p = tmp_path / "nnos.env"
    p.write_text("# the device's settings\nNNOS_FOXGLOVE=1\nNNOS_FOXGLOVE_HZ = 20\n\nNNOS_NOPE=1\n"
                 "NNOS_FOXGLOVE_PORT=eighty\nnot a line\nNNOS_API_HOST=\"127.0.0.1\"\n")
    got, problems = flags.read_env_file(str(p))
    assert got == {"NNOS_FOXGLOVE": "1", "NNOS_FOXGLOVE_HZ": "20", "NNOS_API_HOST": "127.0.0.1"}
    assert len(problems) == 3
    assert problems[0].startswith(f"{p}:5: 'NNOS_NOPE=1' is not NAME=VALUE of a flag")
    assert problems[1].startswith(f"{p}:6: NNOS_FOXGLOVE_PORT='eighty' is invalid: expected int")
    assert problems[2].startswith(f"{p}:7: 'not a line'")
    assert flags.read_env_file(str(tmp_path / "none")) == ({}, [])


def test_the_supervisor_gets_the_devices_settings_over_the_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(init, "CONFIG", str(tmp_path))
    monkeypatch.delenv("NNOS_FOXGLOVE", raising=False)
    monkeypatch.delenv("NNOS_API_HOST", raising=False)
    assert "NNOS_FOXGLOVE" not in init.supervisor_env() and init.supervisor_env()["NNOS_API_HOST"] == "0.0.0.0"
    (tmp_path / "nnos.env").write_text("NNOS_FOXGLOVE=yes\nNNOS_API_HOST=127.0.0.1\nNNOS_FOXGLOVE_HZ=fast\n")
    env = init.supervisor_env()
    assert env["NNOS_FOXGLOVE"] == "yes" and env["NNOS_API_HOST"] == "127.0.0.1" and "NNOS_FOXGLOVE_HZ" not in env
    said = capsys.readouterr().out
    assert "config: " in said and "NNOS_FOXGLOVE_HZ='fast' is invalid: expected float" in said
