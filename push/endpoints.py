"""What a push subscription may be: an https endpoint of a public host (the browser names it:
checked before it is stored, and by ``net.guard`` after resolving it, at each push; tests allow
loopback, over http too, with ``CHAT_FETCH_ALLOW_LOOPBACK``), and keys of the right kinds."""

import base64
import binascii
import ipaddress
import re
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

MAX_ENDPOINT_CHARS = 2048
P256DH_BYTES = 65  # An uncompressed P-256 point: 0x04, then x and y.
UNCOMPRESSED = 0x04
AUTH_BYTES = 16
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def endpoint_problem(url: str, allow_loopback: bool) -> str | None:
    """Why ``url`` cannot be a push endpoint (English, for the error body), or None."""
    if len(url) > MAX_ENDPOINT_CHARS:
        return f"The endpoint must be at most {MAX_ENDPOINT_CHARS} characters."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "The endpoint is not a URL."
    schemes = {"https", "http"} if allow_loopback else {"https"}
    if parts.scheme not in schemes or not parts.hostname:
        return "The endpoint must be an https URL."
    if parts.username or parts.password or parts.fragment:
        return "The endpoint must not carry credentials or a fragment."
    if parts.scheme == "http" and not _is_loopback_name(parts.hostname):
        return "The endpoint must be an https URL."
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None  # A name: checked once resolved, before each push.
    if not _allowed(address, allow_loopback):
        return "The endpoint must be a public address."
    return None


def key_bytes(value: object, length: int) -> bytes | None:
    """``value`` decoded from base64url (padded or not) if it is exactly ``length`` bytes."""
    if not isinstance(value, str) or len(value) > 4 * length or not _BASE64URL.fullmatch(value):
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == length else None


def is_browser_key(value: object) -> bool:
    """Whether ``value`` is a P-256 public key (an uncompressed point, base64url) on the curve."""
    raw = key_bytes(value, P256DH_BYTES)
    if raw is None:
        return False
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        return False
    return raw[0] == UNCOMPRESSED


def _allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, loopback: bool) -> bool:
    """A public address, or a loopback one when the tests allow it."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global or (loopback and address.is_loopback)


def _is_loopback_name(host: str) -> bool:
    """``localhost`` or a loopback address (the only hosts plain http may name)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
