"""The legacy VM's settings file: validated, written atomically, a damaged one set aside."""
from __future__ import annotations

import os

import pytest

from nnos.legacy import settings


def test_defaults_then_saved_changes(tmp_path):
    d = str(tmp_path)
    assert settings.load(d) == settings.DEFAULTS
    assert settings.DEFAULTS["network"] is False
    s = settings.save(d, offer_url="https://vendor.example/offer.onnx", probe_urls=["http://10.0.2.2:8080/"])
    assert settings.load(d) == s
    assert s["offer_url"].endswith("offer.onnx")
    k = settings.kernel_settings(s)
    assert k["probe_urls"] == "http://10.0.2.2:8080/"
    assert k["interval"] == 60
    assert not [f for f in os.listdir(d) if f.startswith(".")]           # no temp file left


@pytest.mark.parametrize("bad", [{"network": "yes"}, {"agents": "telemetry"}, {"interval_s": 10 ** 6},
                                 {"telemetry_url": "http://x/ y"}, {"offer_url": "file:///etc/passwd"},
                                 {"probe_urls": ["http://a,b/"]}, {"memory_mb": 1}, {"cpu_percent": True}, {"x": 1},
                                 {"start_grace_s": 5}])
def test_bad_settings_name_what_is_wrong(tmp_path, bad):
    with pytest.raises(settings.SettingsError) as e:
        settings.save(str(tmp_path), **bad)
    assert next(iter(bad)) in str(e.value) or "unknown" in str(e.value)
    assert not os.path.exists(settings.path(str(tmp_path)))


def test_a_damaged_file_is_set_aside(tmp_path):
    d = str(tmp_path)
    with open(settings.path(d), "w") as f:
        f.write('{"network": tru')
    said = []
    assert settings.load(d, said.append) == settings.DEFAULTS
    assert os.path.exists(settings.path(d) + ".bad")
    assert "set aside" in said[0]
