"""Signed models: Ed25519 keys and detached signatures over a model file's bytes.

    nnos keygen --out KEY        KEY (private, PEM, mode 0600) and KEY.pub (public, PEM)
    nnos sign FILE --key KEY     FILE.sig (base64 of the 64-byte signature)

With NNOS_REQUIRE_SIGNED=1 the control plane accepts an upload only with a header
``X-Nnos-Signature: <base64>`` made by a key in DATA/trusted_keys/*.pub. The device then
countersigns the compiled plan with its own key (DATA/keys/device, made on first use), and
the policy is checked again on those bytes wherever a model is about to run: at activation,
at the loop's start, after a restart. A model stored while the policy was off carries no
countersignature and is refused; the default model is countersigned when it is provisioned.
"""
from __future__ import annotations

import base64
import binascii
import os

from .errors import NnosError
from .fsutil import atomic_write


class SignatureError(NnosError):
    pass


def keygen(path: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    atomic_write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), mode=0o600)
    atomic_write(path + ".pub", key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return path + ".pub"


def sign(data: bytes, key_path: str) -> str:
    from cryptography.hazmat.primitives import serialization
    with open(key_path, "rb") as f:
        try:
            key = serialization.load_pem_private_key(f.read(), password=None)
        except ValueError as e:
            raise SignatureError(f"{key_path}: not a PEM private key: {e}") from e
    return base64.b64encode(key.sign(data)).decode()


def device_key(data_dir: str) -> str:
    """The device's own key (private, 0600), made the first time it is needed."""
    path = os.path.join(data_dir, "keys", "device")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        keygen(path)
    return path


def countersign(data_dir: str, plan_bytes: bytes) -> str:
    return sign(plan_bytes, device_key(data_dir))


def check_stored(data_dir: str, mid: str, plan_bytes: bytes, signature_b64: str | None) -> None:
    """With the policy on: the stored plan must carry the device's countersignature."""
    from cryptography.hazmat.primitives import serialization
    if not signature_b64:
        raise SignatureError(f"model {mid[:12]} is not signed (stored while signed models were not required, "
                             "or provisioned without a signature): upload it again with X-Nnos-Signature")
    pub = device_key(data_dir) + ".pub"
    with open(pub, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    try:
        verify(plan_bytes, signature_b64, [("device", key)])
    except SignatureError as e:
        raise SignatureError(f"model {mid[:12]}: its countersignature does not verify with this device's key "
                             f"({e})") from e


def trusted_keys(data_dir: str) -> list:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    d = os.path.join(data_dir, "trusted_keys")
    keys = []
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if name.endswith(".pub"):
            with open(os.path.join(d, name), "rb") as f:
                k = serialization.load_pem_public_key(f.read())
            if isinstance(k, Ed25519PublicKey):
                keys.append((name, k))
    return keys


def verify(data: bytes, signature_b64: str | None, keys: list) -> str:
    """The name of the trusted key that signed ``data``; SignatureError otherwise."""
    from cryptography.exceptions import InvalidSignature
    if not signature_b64:
        raise SignatureError("unsigned upload: signed models are required (X-Nnos-Signature header)")
    if not keys:
        raise SignatureError("signed models are required but no key is trusted (DATA/trusted_keys/*.pub)")
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError("X-Nnos-Signature is not base64") from e
    for name, k in keys:
        try:
            k.verify(sig, data)
            return name
        except InvalidSignature:
            continue
    raise SignatureError("bad signature: no trusted key signed this upload")
