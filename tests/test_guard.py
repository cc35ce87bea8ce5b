"""The SSRF guard (``net.guard``): what the server fetches for people never reaches its own network,
and never takes longer or reads more than it was allowed."""

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from net import guard


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers by path: /page, /redirect?to=…, /loop, /big, /drip, /echo (the request back)."""

    def do_GET(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        if self.path == "/page":
            self._answer(200, b"<title>hello</title>")
        elif self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect?to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(307)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big":
            self._answer(200, b"x" * 5000)
        elif self.path == "/drip":
            # One byte at a time, each well within any read timeout: only a deadline stops it.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        else:
            self._answer(404, b"no")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        self._answer(200, self.headers["Host"].encode() + b" " + body)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _app(allow_loopback: bool) -> Flask:
    app = Flask(__name__)
    app.config["CHAT_FETCH_ALLOW_LOOPBACK"] = allow_loopback
    return app


def _url(server: http.server.ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def _get(url: str, allow_loopback: bool = True, **limits: object) -> guard.Answer:
    options: dict = {"timeout": 2.0, "max_bytes": 1000} | limits
    with _app(allow_loopback).app_context():
        return guard.fetch("GET", url, **options)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://192.168.1.1/admin",
        "http://172.16.0.5/",
        "http://169.254.169.254/latest/meta-data/",  # The cloud metadata service.
        "http://100.64.0.1/",  # Shared address space (carrier-grade NAT).
        "http://0.0.0.0/",
        "http://[fd00:ec2::254]/",  # A unique-local IPv6 metadata address.
        "http://[::ffff:10.0.0.1]/",  # A private IPv4 address spelled as IPv6.
        "http://224.0.0.1/",
        "http://167772161/",  # 10.0.0.1 as one number: resolved, then refused.
    ],
)
def test_non_public_addresses_are_refused_before_any_connection(url: str) -> None:
    with pytest.raises(guard.Blocked):
        _get(url)


def test_loopback_is_refused_unless_the_test_setting_allows_it(server) -> None:
    with pytest.raises(guard.Blocked):
        _get(_url(server, "/page"), allow_loopback=False)
    with pytest.raises(guard.Blocked):
        _get(f"http://localhost:{server.server_address[1]}/page", allow_loopback=False)
    assert server.seen == []  # Refused before connecting.
    answer = _get(_url(server, "/page"))
    assert (answer.status, answer.body) == (200, b"<title>hello</title>")
    assert answer.headers["content-type"] == "text/html"


def test_a_redirect_to_a_private_address_is_refused(server) -> None:
    with pytest.raises(guard.Blocked):
        _get(_url(server, "/redirect?to=http://10.0.0.1/secret"))
    assert server.seen == ["/redirect?to=http://10.0.0.1/secret"]


def test_redirects_are_followed_each_checked_and_bounded(server) -> None:
    answer = _get(_url(server, "/redirect?to=/page"))
    assert (answer.status, answer.url) == (200, _url(server, "/page"))
    with pytest.raises(guard.FetchError, match="redirects"):
        _get(_url(server, "/loop"))
    assert server.seen.count("/loop") == 4  # The first request and three redirects.


def test_only_http_urls_without_credentials_are_fetched() -> None:
    for url in (
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
        "http:///x",
    ):
        with pytest.raises(guard.FetchError) as raised:
            guard.check_url(url)
        assert not isinstance(raised.value, guard.Blocked)


def test_a_body_over_the_limit_is_refused_or_cut(server) -> None:
    with pytest.raises(guard.FetchError, match="over 1000 bytes"):
        _get(_url(server, "/big"))
    answer = _get(_url(server, "/big"), truncate=True)
    assert answer.body == b"x" * 1000


def test_the_deadline_covers_the_whole_exchange(server) -> None:
    # 1,000 bytes 50 ms apart would take 50 s: the deadline (not a read timeout) ends it.
    started = time.monotonic()
    with pytest.raises(guard.FetchError, match="timed out"):
        _get(_url(server, "/drip"), timeout=0.5)
    assert time.monotonic() - started < 5


def test_an_unreachable_or_unknown_host_is_a_fetch_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # Bound, never listening: the connection is refused.
        with pytest.raises(guard.FetchError) as refused:
            _get(f"http://127.0.0.1:{port}/")
    assert not isinstance(refused.value, guard.Blocked)
    with pytest.raises(guard.FetchError):
        _get("http://no-such-host.invalid/")


def test_a_post_keeps_the_host_name_it_was_sent_to(server) -> None:
    with _app(True).app_context():
        answer = guard.fetch(
            "POST", _url(server, "/hook"), body=b'{"a":1}', timeout=2.0, max_bytes=1000
        )
    assert answer.body == f"127.0.0.1:{server.server_address[1]} ".encode() + b'{"a":1}'
