"""The keys that sign update bundles (RAUC: a CMS signature by a certificate the device's keyring
trusts). ``--signing-key DIR`` names a directory holding ``key.pem`` (the signing key),
``cert.pem`` (its certificate) and ``ca.pem`` (the keyring the image carries: the CA that issued
it). Without it, a development CA and key are made once on this machine, outside the repository
(``~/.local/share/nnos/rauc-dev``), and every build says that it used them: a device built with
them accepts any bundle built on this machine, and no other.

    python3 image/lib/rauc_keys.py [DIR]      # make the development keys, print DIR
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

DEV_DIR = os.path.expanduser(os.environ.get("NNOS_RAUC_DEV_KEYS", "~/.local/share/nnos/rauc-dev"))
FILES = ("key.pem", "cert.pem", "ca.pem")


def _openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"openssl {args[0]} failed: {r.stderr.strip()}")


def make_dev_keys(d: str, name: str = "nnos development") -> str:
    """A CA (10 years) and a signing key and certificate it issued, in ``d`` (mode 0700)."""
    os.makedirs(d, mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        ca_key, csr, ext = (os.path.join(t, n) for n in ("ca.key", "sign.csr", "ext.cnf"))
        _openssl("req", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", "3650", "-keyout", ca_key,
                 "-out", os.path.join(d, "ca.pem"), "-subj", f"/O=nnos/CN={name} CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        _openssl("req", "-newkey", "rsa:3072", "-nodes", "-keyout", os.path.join(d, "key.pem"), "-out", csr,
                 "-subj", f"/O=nnos/CN={name} bundle signing")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
        _openssl("x509", "-req", "-in", csr, "-CA", os.path.join(d, "ca.pem"), "-CAkey", ca_key, "-CAcreateserial",
                 "-days", "3650", "-extfile", ext, "-out", os.path.join(d, "cert.pem"))
    os.chmod(os.path.join(d, "key.pem"), 0o600)
    return d


def signing_dir(given: str | None) -> tuple[str, bool]:
    """(the directory with key.pem, cert.pem and ca.pem, whether it is the development one)."""
    if given:
        missing = [f for f in FILES if not os.path.isfile(os.path.join(given, f))]
        if missing:
            raise SystemExit(f"--signing-key {given}: expected {', '.join(FILES)} there; missing {', '.join(missing)}")
        return os.path.abspath(given), False
    if not all(os.path.isfile(os.path.join(DEV_DIR, f)) for f in FILES):
        make_dev_keys(DEV_DIR)
    return DEV_DIR, True


if __name__ == "__main__":
    print(make_dev_keys(sys.argv[1] if len(sys.argv) > 1 else DEV_DIR))
