"""The server's VAPID key pair (RFC 8292): made once into the instance folder, like the
development secret key, and read from there on every start."""

import base64
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

KEY_FILE = "vapid_private.pem"


@dataclass(frozen=True)
class VapidKeys:
    """The signer pywebpush takes, and the public key a browser subscribes with."""

    signer: Vapid
    public_key: str  # The uncompressed P-256 point, base64url without padding.


def b64url(data: bytes) -> str:
    """``data`` as unpadded base64url, as the Push API writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_keys(path: Path) -> VapidKeys:
    """The key pair kept at ``path``, made there (mode 0600) the first time."""
    pem = _read_or_create(path)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise RuntimeError(f"{path} must hold a P-256 (prime256v1) private key")
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return VapidKeys(Vapid.from_pem(pem), b64url(point))


def _read_or_create(path: Path) -> bytes:
    """The PEM at ``path``; a new one if there is none (two workers starting agree on one)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # mkstemp makes the file 0600; written aside, then linked into place, as the secret key.
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        os.link(tmp, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        os.unlink(tmp)
    return pem
