"""A Web Push service on 127.0.0.1 for the tests: it checks each push as a real one would
(the VAPID JWT, RFC 8292; the aes128gcm body, RFC 8291), decrypts it with the keys the test's
"browser" made, records the payload, and answers as told: 201, 404, 410, or never (hang)."""

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """One subscription, as a browser would make it: its private key stays here."""

    token: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    answer: int | str = 201  # 201, 404, 410 or "hang"
    received: list = field(default_factory=list)  # Decrypted payloads, decoded from JSON.

    def subscription(self):
        """The ``PushSubscription`` JSON the page posts."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


class PushService:
    """The server; ``vapid_public_key`` (base64url) is the app's, which every push must carry."""

    def __init__(self, vapid_public_key):
        self.vapid_public_key = vapid_public_key
        self.browsers = {}
        self.refused = []  # (token, reason) of pushes that failed a check
        self.requests = 0
        self.release = threading.Event()  # Lets hanging requests go (at the end of a test).
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def browser(self, answer=201):
        """A new subscription on this service."""
        token = secrets.token_urlsafe(12)
        browser = Browser(
            token,
            f"{self.origin}/push/{token}",
            ec.generate_private_key(ec.SECP256R1()),
            secrets.token_bytes(16),
            answer,
        )
        self.browsers[token] = browser
        return browser

    def wait_for(self, browser, count=1, timeout=10):
        """Wait until ``browser`` received ``count`` pushes; return them."""
        with self._changed:
            done = self._changed.wait_for(lambda: len(browser.received) >= count, timeout)
        assert done, f"{len(browser.received)} of {count} pushes arrived; refused: {self.refused}"
        return browser.received

    def wait_for_requests(self, count, timeout=10):
        """Wait until ``count`` push requests arrived (whatever was answered)."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.requests >= count, timeout), self.requests

    # ---- Checking a push ------------------------------------------------------------------------

    def check(self, token, headers, body):
        """The decrypted payload, or raise ValueError saying what is wrong."""
        browser = self.browsers.get(token)
        if browser is None:
            raise LookupError(token)
        self.check_vapid(headers.get("Authorization", ""))
        if headers.get("Content-Encoding") != "aes128gcm":
            raise ValueError("Content-Encoding must be aes128gcm")
        if not headers.get("TTL", "").isdigit():
            raise ValueError("TTL header missing")
        plain = http_ece.decrypt(
            body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm"
        )
        return browser, json.loads(plain)

    def check_vapid(self, header):
        """``vapid t=<JWT>,k=<public key>``: k is the app's, the JWT signed with it (ES256)."""
        scheme, _, params = header.partition(" ")
        fields = dict(part.split("=", 1) for part in params.split(",") if "=" in part)
        if scheme != "vapid" or fields.get("k") != self.vapid_public_key:
            raise ValueError(f"not a VAPID header of the app's key: {header[:40]!r}")
        head, claims, signature = fields["t"].split(".")
        if json.loads(unb64url(head)) != {"typ": "JWT", "alg": "ES256"}:
            raise ValueError("the JWT must be ES256")
        raw = unb64url(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        try:
            key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ValueError("bad JWT signature") from None
        claims = json.loads(unb64url(claims))
        if claims.get("aud") != self.origin:
            raise ValueError(f"aud is {claims.get('aud')!r}, not {self.origin}")
        if not time.time() < claims.get("exp", 0) <= time.time() + 24 * 3600:
            raise ValueError("exp must be within 24 hours")
        if not str(claims.get("sub", "")).startswith(("mailto:", "https://")):
            raise ValueError("sub must be a mailto: or https: address")

    def _handler(self):
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                token = self.path.removeprefix("/push/")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with service._changed:
                    service.requests += 1
                    service._changed.notify_all()
                try:
                    browser, payload = service.check(token, self.headers, body)
                except LookupError:
                    self._answer(404)
                    return
                except Exception as error:
                    with service._changed:
                        service.refused.append((token, str(error)))
                        service._changed.notify_all()
                    self._answer(400)
                    return
                if browser.answer == "hang":
                    service.release.wait(30)
                    return
                if browser.answer == 201:
                    with service._changed:
                        browser.received.append(payload)
                        service._changed.notify_all()
                self._answer(browser.answer)

            def _answer(self, status):
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        return Handler
