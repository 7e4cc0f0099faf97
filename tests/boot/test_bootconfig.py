"""Config put on the boot partition before a boot (nnos/boot/bootconfig.py): imported into the
data partition's config once per content, each file checked as its reader reads it, a bad one
refused with its reason while the device keeps what it had, and every outcome kept for the
status."""
from __future__ import annotations

import json
import os

import pytest

import nnos.boot.init as init
from nnos.boot import bootconfig
from tests.support.paths import BOARDS

BOARD = open(os.path.join(BOARDS, "cartpole-sim.toml"), "rb").read()
NETWORK = b'address = "192.168.7.50/24"\ngateway = "192.168.7.1"\n'


@pytest.fixture
def dirs(tmp_path):
    source, config = tmp_path / "boot" / "nnos" / "config", tmp_path / "data" / "config"
    source.mkdir(parents=True)
    config.mkdir(parents=True)
    (source / "README.txt").write_text("the image's note")
    return source, config


def take(source, config) -> tuple[dict, list[str]]:
    said = []
    return bootconfig.take(str(source), str(config), said.append), said


def test_every_kind_of_file_is_imported_once_and_the_devices_later_changes_kept(dirs):
    source, config = dirs
    (source / "board.toml").write_bytes(BOARD.replace(b'name = "cartpole-sim"', b'name = "my-cartpole"'))
    (source / "network.toml").write_bytes(NETWORK)
    (source / "nnos.env").write_bytes(b"# mine\nNNOS_FOXGLOVE=1\n")
    (source / "hostname").write_bytes(b"arm-3\n")
    record, said = take(source, config)
    assert sorted(record) == ["board.toml", "hostname", "network.toml", "nnos.env"]        # not README.txt
    assert all(r["result"] == "imported" and r["why"] is None for r in record.values()), record
    for name in record:
        assert (config / name).read_bytes() == (source / name).read_bytes()
    assert len(said) == 4 and all("imported from the boot partition" in s for s in said), said
    assert json.loads((config / bootconfig.RECORD).read_text()) == record
    assert not [p for p in os.listdir(config) if p.startswith(".")], os.listdir(config)     # no candidates left
    # the device's config changed since (over the API): the same file on the boot partition leaves it
    (config / "network.toml").write_bytes(b"")
    record2, said = take(source, config)
    assert record2 == record and said == [] and (config / "network.toml").read_bytes() == b""
    # the file there changed: imported again
    (source / "network.toml").write_bytes(NETWORK.replace(b".50/", b".51/"))
    _, said = take(source, config)
    assert said == [f"config: network.toml imported from the boot partition ({source / 'network.toml'})"]
    assert b"192.168.7.51/24" in (config / "network.toml").read_bytes()
    # removed from the boot partition: the device keeps its copy
    os.unlink(source / "hostname")
    assert take(source, config)[1] == [] and (config / "hostname").read_bytes() == b"arm-3\n"


@pytest.mark.parametrize("name, data, why", [
    ("board.toml", b'[board]\nname = "x"\nrate_hz = "fast"\n', "rate_hz must be a number"),
    ("board.toml", b"[board\n", "not valid TOML"),
    ("network.toml", b'address = "10.0.0.300/24"\n', "10.0.0.300/24"),
    ("network.toml", b'gateway = "10.0.0.1"\n', "a gateway needs a static address"),
    ("nnos.env", b"NNOS_FOXGLOVE=1\nNNOS_FOXGLOVE_PORT=eighty\n", "NNOS_FOXGLOVE_PORT='eighty' is invalid"),
    ("nnos.env", b"NNOS_NO_SUCH_FLAG=1\n", "is not NAME=VALUE of a flag"),
    ("hostname", b"my robot\n", "is not a host name"),
    ("hostname", b"-arm\n", "is not a host name"),
    ("board.toml.txt", BOARD, "not a config file nnos reads; expected one of board.toml, network.toml"),
    ("nnos.env", "NNOS_FOXGLOVE=1\n".encode("utf-16"), "cannot be read as UTF-8 text"),    # Notepad's "Unicode"
], ids=["board-type", "board-toml", "network-address", "network-gateway", "env-value", "env-flag", "hostname-space",
        "hostname-dash", "editor-suffix", "env-utf16"])
def test_a_bad_file_is_refused_with_its_reason_and_the_devices_own_kept(dirs, name, data, why):
    source, config = dirs
    real = name.removesuffix(".txt")
    (config / real).write_bytes(b"# the device's own\n")
    (source / name).write_bytes(data)
    record, said = take(source, config)
    assert record[name]["result"] == ("unknown" if name.endswith(".txt") else "refused"), record
    assert why in record[name]["why"], record[name]
    assert str(source / name) in record[name]["why"], record[name]      # named as the builder wrote it
    assert len(said) == 1 and said[0].startswith(f"config: {source / name} refused: ") and why in said[0], said
    assert (config / real).read_bytes() == b"# the device's own\n"
    assert not [p for p in os.listdir(config) if p.startswith(".")], os.listdir(config)
    # said again at every boot until it changes; checked once
    _, said = take(source, config)
    assert said == [f"config: {source / name} is still refused: {record[name]['why']}"], said


def test_an_oversized_file_is_refused_unread(dirs):
    source, config = dirs
    (source / "board.toml").write_bytes(b"#" * (bootconfig.MAX_BYTES + 10))
    record, _ = take(source, config)
    assert record["board.toml"]["result"] == "refused"
    assert f"a config file is at most {bootconfig.MAX_BYTES}" in record["board.toml"]["why"]
    assert not (config / "board.toml").exists()


def test_no_folder_on_the_boot_partition_is_nothing_to_do(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    assert take(tmp_path / "absent", config) == ({}, [])
    assert os.listdir(config) == []


def test_init_imports_before_the_defaults_fill_in_the_rest(dirs, tmp_path, monkeypatch, capsys):
    source, config = dirs
    default = tmp_path / "default-board.toml"
    default.write_bytes(BOARD)
    (source / "board.toml").write_bytes(BOARD.replace(b'name = "cartpole-sim"', b'name = "from-the-card"'))
    monkeypatch.setattr(init, "BOOT_CONFIG", str(source))
    monkeypatch.setattr(init, "CONFIG", str(config))
    monkeypatch.setattr(init, "DEFAULT_BOARD", str(default))
    monkeypatch.setattr(init, "STATE", str(tmp_path / "state"))
    monkeypatch.setattr(init.datapart, "mount", lambda *a, **k: None)      # the run folder's tmpfs: root's
    init.import_boot_config()
    init.restore_defaults()
    assert b'name = "from-the-card"' in (config / "board.toml").read_bytes()
    out = capsys.readouterr().out
    assert "board.toml imported from the boot partition" in out and "restored from the image's default" not in out


def test_the_tokens_go_to_the_control_planes_folder_private_and_never_shown(dirs, tmp_path):
    """A builder (or a fleet) picks the device's API and scrape tokens before its first boot, so
    it knows them without reading the device's ext4 partition."""
    from nnos.controlplane.settings import ensure_token
    source, config = dirs
    state = tmp_path / "data" / "nnos"
    token, scrape = "nnos_" + "A1b2-_" * 7, "nnos_scrape_" + "z" * 40
    (source / "token").write_text(token + "\r\n")                # an editor's line end
    (source / "scrape_token").write_text(scrape)
    said = []
    record = bootconfig.take(str(source), str(config), said.append, state=str(state))
    assert record["token"]["result"] == record["scrape_token"]["result"] == "imported", record
    assert (state / "token").read_text() == token + "\n" and (state / "scrape_token").read_text() == scrape + "\n"
    assert oct(os.stat(state / "token").st_mode & 0o777) == "0o600"
    assert not (config / "token").exists()
    assert ensure_token(str(state)) == (token, False)              # what the control plane answers to
    assert ensure_token(str(state), "scrape_token", "nnos_scrape_") == (scrape, False)
    shown = json.dumps(record) + "".join(said)
    assert token not in shown and scrape not in shown


@pytest.mark.parametrize("name, token, why", [
    ("token", "nnos_" + "x" * 31, "not a token"),                          # < 192 bits
    ("token", "apikey_" + "x" * 40, "not a token"),
    ("token", "nnos_" + "x" * 30 + " " + "y" * 10, "not a token"),
    ("token", "nnos_scrape_" + "x" * 40, "a scrape token, not an API token"),
    ("scrape_token", "nnos_" + "x" * 40, "not a scrape token"),
], ids=["short", "prefix", "space", "scrape-as-api", "api-as-scrape"])
def test_a_weak_or_misplaced_token_is_refused_without_being_quoted(dirs, tmp_path, name, token, why):
    source, config = dirs
    state = tmp_path / "data" / "nnos"
    state.mkdir()
    (state / name).write_text("nnos_the_devices_own\n")
    (source / name).write_text(token)
    said = []
    record = bootconfig.take(str(source), str(config), said.append, state=str(state))
    assert record[name]["result"] == "refused" and why in record[name]["why"], record
    assert token not in json.dumps(record) + "".join(said)
    assert (state / name).read_text() == "nnos_the_devices_own\n"


def test_a_damaged_record_entry_is_seen_anew(dirs):
    """A record edited by hand or damaged: its odd entries are forgotten, the files taken again."""
    source, config = dirs
    (config / bootconfig.RECORD).write_text('{"hostname": "x", "network.toml": [1]}')
    (source / "hostname").write_bytes(b"arm-3\n")
    record, said = take(source, config)
    assert record["hostname"]["result"] == "imported" and "network.toml" not in record, record
    assert json.loads((config / bootconfig.RECORD).read_text()) == record


def test_an_import_that_fails_leaves_init_the_steps_after_it(tmp_path, monkeypatch, capsys):
    """Whatever goes wrong reading the boot partition, PID 1 goes on to the defaults, the host
    name and the run folder (a boot step's exception would skip them all)."""
    def broken(*a, **k):
        raise RuntimeError("the card's folder is odd")
    monkeypatch.setattr(bootconfig, "take", broken)
    monkeypatch.setattr(init, "CONFIG", str(tmp_path / "config"))
    init.import_boot_config()
    assert "config: the boot partition's config was not imported: RuntimeError: the card's folder is odd" \
        in capsys.readouterr().out
