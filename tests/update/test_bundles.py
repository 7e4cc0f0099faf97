"""Update bundles with the real tools: image/bundle.py makes a signed verity bundle with RAUC from
a root filesystem; the device's client (nnos.update.rauc.info) accepts it against the keyring
that signed it, and refuses one signed by another key, a truncated one and one that is not a
bundle at all, saying why."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nnos.update import rauc
from tests.support.paths import ROOT

sys.path.insert(0, os.path.join(ROOT, "image"))
sys.path.insert(0, os.path.join(ROOT, "image", "lib"))

from bundle import make  # noqa: E402
from rauc_keys import make_dev_keys  # noqa: E402


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    root = d / "root"
    (root / "etc" / "nnos").mkdir(parents=True)
    (root / "etc" / "nnos" / "release").write_text("VERSION=9.9.9+test\n")
    (root / "payload").write_bytes(os.urandom(256 << 10))          # squashfs over RAUC's 4 KiB floor
    sqfs = d / "root.sqfs"
    subprocess.run(["mksquashfs", str(root), str(sqfs), "-noappend", "-quiet", "-no-progress"], check=True)
    ours, theirs = make_dev_keys(str(d / "ours")), make_dev_keys(str(d / "theirs"), "someone else")
    bundle = d / "good.raucb"
    make(str(sqfs), "nnos-amd64-test", "9.9.9+test", ours, str(bundle))
    other = d / "other.raucb"
    make(str(sqfs), "nnos-amd64-test", "9.9.9+test", theirs, str(other))
    return {"bundle": str(bundle), "other": str(other), "ours": ours, "theirs": theirs, "dir": d}


def test_a_bundle_made_here_is_a_signed_verity_bundle_of_its_root(made):
    got = rauc.info(made["bundle"], keyring=os.path.join(made["ours"], "ca.pem"))
    assert got["compatible"] == "nnos-amd64-test" and got["version"] == "9.9.9+test"
    text = subprocess.run(["rauc", "info", f"--keyring={made['ours']}/ca.pem", made["bundle"]],
                          capture_output=True, text=True, check=True).stdout
    assert "Bundle Format: \tverity" in text, text
    assert [i["filename"] for i in (list(x.values())[0] for x in got["images"])] == ["root.img"], got


def test_a_bundle_signed_by_another_key_is_refused_by_name(made):
    with pytest.raises(rauc.UpdateError, match="the bundle was refused: .*(signature|certificate|verif)"):
        rauc.info(made["other"], keyring=os.path.join(made["ours"], "ca.pem"))


@pytest.mark.parametrize("what", ["truncated", "not a bundle"])
def test_a_damaged_bundle_is_refused(made, what):
    data = open(made["bundle"], "rb").read()
    bad = made["dir"] / f"{what.replace(' ', '-')}.raucb"
    bad.write_bytes(data[: len(data) // 2] if what == "truncated" else os.urandom(64 << 10))
    with pytest.raises(rauc.UpdateError, match="the bundle was refused"):
        rauc.info(str(bad), keyring=os.path.join(made["ours"], "ca.pem"))


def test_the_signing_keys_are_checked_before_a_build(tmp_path):
    from rauc_keys import signing_dir
    with pytest.raises(SystemExit, match="missing .*cert.pem"):
        (tmp_path / "key.pem").write_text("x")
        signing_dir(str(tmp_path))


def test_a_bundle_larger_than_the_slot_is_refused_before_a_byte_is_written(tmp_path):
    from nnos.update.rauc import too_big
    slot = tmp_path / "root-b"
    slot.write_bytes(bytes(4096))
    info = {"images": [{"rootfs": {"filename": "root.img", "size": 4096}}]}
    assert too_big(info, {"device": str(slot)}) is None
    info["images"][0]["rootfs"]["size"] = 4097
    assert too_big(info, {"device": str(slot)}) == f"the bundle's root filesystem is 4097 bytes; the slot ({slot}) holds 4096"
    assert "cannot be measured" in too_big(info, {"device": str(tmp_path / "missing")})


@pytest.fixture(scope="module")
def chunked(made):
    """A bundle and its casync form (rauc convert): an index bundle and its chunk store."""
    from bundle import convert
    d = made["dir"]
    root = d / "big-root"
    root.mkdir()
    (root / "payload").write_bytes(os.urandom(16 << 20))         # an index bundle over RAUC's 4 KiB floor
    sqfs = d / "big.sqfs"
    subprocess.run(["mksquashfs", str(root), str(sqfs), "-noappend", "-quiet", "-no-progress"], check=True)
    plain = str(d / "big.raucb")
    make(str(sqfs), "nnos-amd64-test", "9.9.10", made["ours"], plain)
    index = str(d / "big-casync.raucb")
    store = convert(plain, made["ours"], index)
    return {"plain": plain, "index": index, "store": store}


def test_a_casync_bundle_is_installed_from_its_url_only(made, chunked):
    keyring = os.path.join(made["ours"], "ca.pem")
    plain, index = rauc.info(chunked["plain"], keyring=keyring), rauc.info(chunked["index"], keyring=keyring)
    assert not rauc.chunked(plain) and rauc.chunked(index), index
    assert os.path.getsize(chunked["index"]) < os.path.getsize(chunked["plain"]) // 20
    assert os.path.isdir(chunked["store"]) and any(n.endswith(".cacnk") for _, _, ns in os.walk(chunked["store"]) for n in ns)
    assert rauc.source(plain, "/data/updates/x.raucb", None) == "/data/updates/x.raucb"
    assert rauc.source(plain, "/data/updates/x.raucb", "http://10.0.0.2/big.raucb") == "/data/updates/x.raucb"
    url = "http://10.0.0.2:8000/releases/big-casync.raucb"
    assert rauc.source(index, "/data/updates/x.raucb", url) == url
    with pytest.raises(rauc.UpdateError, match=r"casync bundle: .*install it by URL \(\?url=…/NAME.raucb, with NAME.castr/"):
        rauc.source(index, "/data/updates/x.raucb", None)
    for bad in ("http://10.0.0.2/big-casync.raucb?v=2", "http://10.0.0.2/download/7"):
        with pytest.raises(rauc.UpdateError, match="must end in .raucb with no query"):
            rauc.source(index, "/data/updates/x.raucb", bad)
