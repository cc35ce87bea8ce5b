"""The shipped deployment pieces: gunicorn behind the shipped nginx site, proxy headers."""

import json
import re

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import token_issued_at


def test_sockets_work_through_nginx_and_its_log_has_no_token(
    app, behind_proxy, nginx_server, alice
):
    host = nginx_server.url.removeprefix("http://")
    token = token_issued_at(app, alice)
    with connect(f"ws://{host}/ws?token={token}", origin=nginx_server.url, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send("through nginx")
        assert json.loads(ws.recv(timeout=5))["text"] == "through nginx"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{host}/ws?token={token}", origin="https://evil.example", open_timeout=5)
    assert refused.value.response.status_code == 403
    log = nginx_server.access_log.read_text()
    assert '"GET /ws HTTP/1.1" 101' in log
    assert token not in log


def test_spoofed_forwarded_for_does_not_escape_the_login_limit(
    app_config, behind_proxy, nginx_server
):
    import urllib.error
    import urllib.request

    statuses = []
    for n in range(5):
        request = urllib.request.Request(  # noqa: S310 - our own nginx on loopback
            f"{nginx_server.url}/api/token",
            data=json.dumps({"email": f"u{n}@example.com", "password": "x"}).encode(),
            headers={"Content-Type": "application/json", "X-Forwarded-For": f"203.0.113.{n}"},
        )
        try:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 - our own nginx on loopback
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
    # CHAT_LOGIN_LIMIT_PER_IP is 30 a minute by default; this test's gunicorn gets 3 (see below).
    assert statuses == [401, 401, 401, 429, 429]


@pytest.fixture
def app_config(app_config):
    """Login limit of 3 a minute per address for this module's gunicorn."""
    app_config["CHAT_LOGIN_LIMIT_PER_IP"] = "3 per minute"
    return app_config


def test_nginx_revalidates_static_files_and_hides_metrics(app_config, nginx_server):
    import urllib.error
    import urllib.request

    # An upgrade must never leave a page with an old cached module beside a new one.
    with urllib.request.urlopen(f"{nginx_server.url}/static/chat.js", timeout=5) as response:  # noqa: S310
        assert response.headers["Cache-Control"] == "no-cache"
        etag = response.headers["ETag"]
    again = urllib.request.Request(  # noqa: S310 - our own nginx on loopback
        f"{nginx_server.url}/static/chat.js", headers={"If-None-Match": etag}
    )
    with pytest.raises(urllib.error.HTTPError) as unchanged:
        urllib.request.urlopen(again, timeout=5)  # noqa: S310
    unchanged.value.close()
    assert unchanged.value.code == 304
    # Prometheus scrapes gunicorn directly; the public site never serves the metrics.
    with pytest.raises(urllib.error.HTTPError) as hidden:
        urllib.request.urlopen(f"{nginx_server.url}/metrics", timeout=5)  # noqa: S310
    hidden.value.close()
    assert hidden.value.code == 404


@pytest.fixture
def accelerated(app_config):
    """The gunicorn behind nginx answers file requests with X-Accel-Redirect (as deployed)."""
    app_config["CHAT_UPLOAD_ACCEL"] = "/_uploads/"
    app_config["CHAT_PROXY_HOPS"] = 1


def test_nginx_sends_the_files_the_app_allows(app, accelerated, nginx_server, alice, bob):
    import io
    import urllib.error
    import urllib.request
    import uuid

    from PIL import Image

    def request(path, user, data=None, headers=None):
        token = token_issued_at(app, user)
        sent = urllib.request.Request(  # noqa: S310 - our own nginx on loopback
            f"{nginx_server.url}{path}",
            data=data,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(sent, timeout=5) as response:  # noqa: S310
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers, error.read()

    def upload(user, name, data):
        boundary = uuid.uuid4().hex
        body = (
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        kind = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return request("/api/uploads", user, body, kind)

    picture = io.BytesIO()
    Image.new("RGB", (30, 20), (0, 128, 255)).save(picture, "PNG")
    status, _, body = upload(alice, "plan.png", picture.getvalue())
    assert status == 201, body
    described = json.loads(body)
    status, headers, body = request(described["url"], alice)
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"].startswith("inline;")
    assert headers["Cache-Control"] == "private, max-age=86400"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert "X-Accel-Redirect" not in headers
    assert len(body) == described["size"]
    assert Image.open(io.BytesIO(body)).size == (30, 20)
    status, headers, body = upload(alice, "page.html", b"<script>alert(1)</script>")
    page = json.loads(body)
    status, headers, body = request(page["url"], alice)
    assert (status, body) == (200, b"<script>alert(1)</script>")
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment;")
    # Not posted: bob may not have it, through nginx either; and nobody reaches the folder.
    assert request(described["url"], bob)[0] == 404
    assert request("/_uploads/", alice)[0] == 404
    # nginx refuses a body past its limit itself, in JSON.
    status, _, body = upload(alice, "big.bin", b"x" * (27 * 1024 * 1024))
    assert (status, json.loads(body)["error"]) == (413, "too_large")
    # nginx logs the internal location ($uri): it sent the image itself.
    assert re.search(r'"GET /_uploads/\S+\.png HTTP/1\.1" 200', nginx_server.access_log.read_text())
