"""HTTP requests the server makes on people's behalf, guarded against request forgery (SSRF).

A link in a message or a webhook URL is chosen by a person, and the server fetching it must not
become their way into the machine's own network: every host is resolved first, and if any of its
addresses is not a public one (loopback, private, link-local such as the cloud metadata service
169.254.169.254, shared, multicast, reserved), nothing is sent. The connection then goes to the
address that was checked, not to the name (a second lookup could answer differently: DNS
rebinding), with the name kept for the Host header and TLS. Each redirect is checked the same
way before it is followed. The whole exchange has one deadline, and no more than ``max_bytes``
of the body is read.

``http.client`` rather than a client library: the guard must choose the address it connects to,
and set the socket's timeout before each read to what is left of the deadline.
"""

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from flask import current_app

DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECTS = {301, 302, 303, 307, 308}
CHUNK = 64 * 1024


class FetchError(Exception):
    """The request failed or broke a limit: ``reason`` says how (for logs and administrators)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Blocked(FetchError):
    """The URL, or a redirect, leads to an address the server must not reach."""


@dataclass(frozen=True)
class Answer:
    """What came back: status, headers (names in lower case), body, and the final URL."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


def fetch(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    max_bytes: int,
    max_redirects: int = 3,
    truncate: bool = False,
) -> Answer:
    """Send one request (following up to ``max_redirects`` redirects, each checked) within
    ``timeout`` seconds in all. A body over ``max_bytes`` raises ``FetchError``, or with
    ``truncate`` comes back cut at ``max_bytes`` (a page's head is all a preview needs).

    A 303, or a 301/302 answering a POST, is followed with a GET and no body, as browsers do.
    """
    deadline = time.monotonic() + timeout
    allow_loopback = bool(current_app.config.get("CHAT_FETCH_ALLOW_LOOPBACK"))
    for _hop in range(max_redirects + 1):
        answer = _once(
            method, url, body, headers or {}, deadline, max_bytes, truncate, allow_loopback
        )
        location = answer.headers.get("location")
        if answer.status not in REDIRECTS or not location:
            return answer
        url = urljoin(url, location)
        if answer.status == 303 or (answer.status in {301, 302} and method == "POST"):
            method, body = "GET", None
    raise FetchError(f"more than {max_redirects} redirects")


def check_url(url: str) -> None:
    """Refuse, without any lookup, a URL the guard would never fetch (scheme, host, userinfo)."""
    _target(url)


def _target(url: str) -> tuple[str, str, int, str, str]:
    """``(scheme, host, port, Host header, path with query)`` of an http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise FetchError(f"not a URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise FetchError("only http and https URLs are fetched")
    if not parts.hostname:
        raise FetchError("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with credentials are not fetched")
    host = parts.hostname
    port = port or DEFAULT_PORTS[scheme]
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port, host_header, path


def _allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, loopback: bool) -> bool:
    """Whether the guard may connect to ``address``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1.
    if address.is_loopback:
        return loopback
    return address.is_global and not address.is_multicast


def _resolve(host: str, port: int, allow_loopback: bool) -> str:
    """The first address of ``host``, once every address it has was found allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise FetchError(f"cannot resolve {host}: {error}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise FetchError(f"{host} has no address")
    for address in addresses:
        if not _allowed(address, allow_loopback):
            raise Blocked(f"{host} is a non-public address ({address})")
    return str(addresses[0])


def _once(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    deadline: float,
    max_bytes: int,
    truncate: bool,
    allow_loopback: bool,
) -> Answer:
    """One request, no redirect followed."""
    scheme, host, port, host_header, path = _target(url)
    address = _resolve(host, port, allow_loopback)
    connection = _connection(scheme, host, address, port, _left(deadline))
    try:
        sent = {"Host": host_header, "Accept-Encoding": "identity", **headers}
        connection.request(method, path, body=body, headers=sent)
        # Held here: a connection that will close hands its socket to the response and forgets it.
        sock = connection.sock
        response = connection.getresponse()
        length = response.getheader("Content-Length")
        if not truncate and length and length.isdecimal() and int(length) > max_bytes:
            raise FetchError(f"the answer is over {max_bytes} bytes")
        data = _read(sock, response, deadline, max_bytes, truncate)
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, answer_headers, data, url)
    except TimeoutError:
        raise FetchError("timed out") from None
    except (OSError, http.client.HTTPException) as error:
        raise FetchError(f"{type(error).__name__}: {error}") from None
    finally:
        connection.close()


def _read(
    sock: socket.socket | None,
    response: http.client.HTTPResponse,
    deadline: float,
    max_bytes: int,
    truncate: bool,
) -> bytes:
    """The body, at most ``max_bytes``, each read given only what is left of the deadline."""
    chunks: list[bytes] = []
    size = 0
    while True:
        left = _left(deadline)
        if sock is not None:
            sock.settimeout(left)
        chunk = response.read1(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            if truncate:
                chunks.append(chunk[: len(chunk) - (size - max_bytes)])
                return b"".join(chunks)
            raise FetchError(f"the answer is over {max_bytes} bytes")
        chunks.append(chunk)


def _left(deadline: float) -> float:
    """Seconds left before ``deadline``; past it, the request has timed out."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timed out")
    return left


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address already checked, with the certificate checked for the host's name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._name = host
        self._context = ssl.create_default_context()

    def connect(self) -> None:
        """Connect to the checked address; verify TLS against the name (SNI too)."""
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._name)


def _connection(
    scheme: str, host: str, address: str, port: int, timeout: float
) -> http.client.HTTPConnection:
    """A connection to ``address`` (the checked address of ``host``), not yet opened."""
    if scheme == "https":
        return _PinnedHTTPS(host, address, port, timeout)
    return http.client.HTTPConnection(address, port, timeout=timeout)
