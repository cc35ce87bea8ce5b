"""Fetching previews: the listener of new messages, its bounded queue and its few workers.

The committer's thread (``core.signals.messages_published``) only queues a message that may hold
a link; a full queue drops it (no preview, the chat goes on). A worker takes the message's first
link (``links.first_link``), and unless ``LinkPreview`` has it fresh, fetches the page through
the SSRF guard (``net.guard``: public addresses only, after DNS and on every redirect; at most
``CHAT_PREVIEW_MAX_BYTES`` in ``CHAT_PREVIEW_TIMEOUT`` seconds; HTML only), then its image, which
is re-encoded by the uploads' thumbnail code and kept in the file store under a random key:
pages only ever load our copy. Then, under the hub's order, the message gets its preview, as a
change every client sees (``message_changed`` kind "preview") and a resuming one replays.

Workers start with the first message that needs one and end after ``IDLE`` quiet seconds: no
thread at import or at ``create_app``, none left behind by an app no one uses.
"""

import logging
import queue
import secrets
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from flask import Flask, current_app
from PIL import Image, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from core.signals import messages_published
from extensions import db
from files.images import ImageError, prepare
from files.store import StoreError, store
from models import LinkPreview, Message, as_utc, utcnow
from net import guard
from previews import changes
from previews.links import first_link, may_have_link
from previews.opengraph import Card, parse
from realtime import outside
from realtime.backplane import BackplaneError
from realtime.runtime import current_runtime

log = logging.getLogger(__name__)

EXTENSION_KEY = "chat.previews"
QUEUE_SIZE = 200  # Messages waiting for a worker; past it, new ones get no preview.
WORKERS = 2
IDLE = 30.0  # Seconds a worker waits for work before it ends.
FRESH = timedelta(hours=24)  # A preview is fetched again after this long ...
FAILED_FRESH = timedelta(hours=1)  # ... and a page that gave none after this long.
MAX_IMAGE_BYTES = 5 * 1024 * 1024
HTML_TYPES = ("text/html", "application/xhtml+xml")
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
HEADERS = {
    "Accept": "text/html,application/xhtml+xml;q=0.9",
    "User-Agent": "flask-chat-link-preview/1.0",
}
# The store's key of each re-encoded image kind, and how the route serves it.
EXTENSIONS = {"image/webp": ".webp", "image/gif": ".gif", "image/png": ".png", "image/jpeg": ".jpg"}


class Job(NamedTuple):
    """A new message that may hold a link."""

    message_id: int
    text: str


class Picture(NamedTuple):
    """A re-encoded image, stored under ``key``."""

    key: str
    width: int
    height: int


class Previewer:
    """One app's queue of messages to preview, and the workers that drain it."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._jobs: queue.Queue[Job] = queue.Queue(QUEUE_SIZE)
        self._lock = threading.Lock()  # Guards the two counts and the per-URL locks below.
        self._workers = 0
        self._fetching: dict[str, threading.Lock] = {}  # One fetch of a URL at a time.
        self._users: dict[str, int] = {}  # How many workers want each of those locks.

    def listen(self) -> None:
        """Hear of this app's new messages (blinker holds the bound method weakly: the app
        holds this object)."""
        messages_published.connect(self.on_published, sender=self._app)

    def on_published(self, _app: Flask, messages: list[Mapping[str, Any]]) -> None:
        """Queue the messages that may hold a link; never blocks, never raises."""
        for message in messages:
            if message.get("deleted") or not may_have_link(message.get("text", "")):
                continue
            try:
                self._jobs.put_nowait(Job(message["id"], message["text"]))
            except queue.Full:
                log.warning("link previews are behind: message %s gets none", message["id"])
                continue
            self._staff()

    def _staff(self) -> None:
        """Start a worker if there are fewer than ``WORKERS``."""
        with self._lock:
            if self._workers >= WORKERS:
                return
            self._workers += 1
        threading.Thread(target=self._work, name="chat-previews", daemon=True).start()

    def _work(self) -> None:
        """Preview message after message; end once idle (checked under the lock, so that a job
        queued meanwhile always finds a worker)."""
        while True:
            try:
                job = self._jobs.get(timeout=IDLE)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._workers -= 1
                        return
                continue
            try:
                with self._app.app_context():
                    self._preview(job)
            except Exception:  # A bug must not end the worker; the message just has no preview.
                log.exception("could not preview message %s", job.message_id)

    def _preview(self, job: Job) -> None:
        """Find or fetch the preview of the message's first link, and show it under it."""
        url = first_link(job.text)
        if url is None:
            return
        with self._one_fetch_of(url):
            preview_id = find_or_fetch(url)
        if preview_id is not None:
            show(job.message_id, url, preview_id)

    @contextmanager
    def _one_fetch_of(self, url: str) -> Iterator[None]:
        """Hold the URL's lock: a second message with the same link waits, then finds the row."""
        with self._lock:
            lock = self._fetching.setdefault(url, threading.Lock())
            self._users[url] = self._users.get(url, 0) + 1
        try:
            with lock:
                yield
        finally:
            with self._lock:
                self._users[url] -= 1
                if not self._users[url]:
                    del self._users[url], self._fetching[url]


# ---- The cache and the fetch ------------------------------------------------------------------


def find_or_fetch(url: str) -> int | None:
    """The id of a preview worth showing for ``url``: the stored one while fresh, else fetched
    (a failure is stored too, and not tried again before ``FAILED_FRESH``); None: nothing."""
    row = db.session.scalar(select(LinkPreview).where(LinkPreview.url == url))
    if row is not None and _fresh(row):
        return row.id if row.ok else None
    has_image = row is not None and row.ok and row.image_key is not None
    db.session.remove()  # No transaction stays open while the page is fetched.
    card = fetch_card(url)
    image = None
    if card is not None and card.image and not has_image:
        image = fetch_image(card.image)
    return _save(url, card, image)


def _fresh(row: LinkPreview) -> bool:
    age = utcnow() - as_utc(row.fetched_at)
    return age < (FRESH if row.ok else FAILED_FRESH)


def _get(url: str, max_bytes: int) -> guard.Answer | None:
    """A 200 answer for ``url`` through the guard, or None (refused, failed, any other status)."""
    config = current_app.config
    try:
        answer = guard.fetch(
            "GET",
            url,
            headers=HEADERS,
            timeout=float(config["CHAT_PREVIEW_TIMEOUT"]),
            max_bytes=max_bytes,
        )
    except guard.Blocked as error:
        log.info("link preview refused by the guard: %s", error)
        return None
    except guard.FetchError as error:
        log.info("link preview not fetched: %s", error)
        return None
    return answer if answer.status == 200 else None


def content_type(headers: Mapping[str, str]) -> str:
    """The answer's ``Content-Type``, however its headers are spelled."""
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value
    return ""


def fetch_card(url: str) -> Card | None:
    """The card of the HTML page at ``url``, or None (not HTML, too large, nothing to show)."""
    answer = _get(url, current_app.config["CHAT_PREVIEW_MAX_BYTES"])
    if answer is None:
        return None
    kind = content_type(answer.headers)
    if kind.split(";")[0].strip().lower() not in HTML_TYPES:
        return None
    card = parse(answer.body, kind, answer.url)
    return card if card.worth_showing else None


def fetch_image(url: str) -> Picture | None:
    """The image at ``url`` re-encoded by the uploads' thumbnail code and stored; None if it is
    no image we show (by its bytes, not only its type), too large, or not stored."""
    answer = _get(url, MAX_IMAGE_BYTES)
    if answer is None:
        return None
    if content_type(answer.headers).split(";")[0].strip().lower() not in IMAGE_TYPES:
        return None
    with tempfile.TemporaryDirectory(prefix="chat-preview-") as work:
        source = Path(work) / "image"
        source.write_bytes(answer.body)
        try:
            prepared = prepare(source, Path(work), current_app.config["CHAT_MAX_IMAGE_PIXELS"])
        except ImageError:
            return None
        if not prepared.is_image or prepared.thumbnail is None:
            return None
        return _store_image(prepared.thumbnail, prepared.content_type)


def _store_image(thumbnail: Path, original_type: str) -> Picture | None:
    """Keep the thumbnail (a WebP; an animation is its own, re-encoded) under a random key."""
    try:
        with Image.open(thumbnail) as written:
            width, height = written.size
            served = Image.MIME.get(written.format or "", "")
    except (UnidentifiedImageError, OSError):
        return None
    if served not in EXTENSIONS:
        served = original_type if original_type in EXTENSIONS else ""
    if not served:
        return None
    key = f"previews/{secrets.token_hex(16)}{EXTENSIONS[served]}"
    try:
        store().put(key, thumbnail, served)
    except StoreError:
        log.warning("could not store a link preview's image")
        return None
    return Picture(key, width, height)


def _save(url: str, card: Card | None, image: Picture | None) -> int | None:
    """Store what the fetch gave (a failure keeps the last good preview of the URL); the id of
    a preview worth showing, or None."""
    try:
        row = db.session.scalar(select(LinkPreview).where(LinkPreview.url == url))
        if row is None:
            row = LinkPreview(url=url)
            db.session.add(row)
        if card is not None:
            row.ok = True
            row.title, row.description, row.site_name = card.title, card.description, card.site_name
            if image is not None:
                row.image_key, row.image_width, row.image_height = image
        elif not row.ok:
            row.ok = False
        row.fetched_at = utcnow()
        db.session.commit()
    except IntegrityError:  # Another worker stored it meanwhile: theirs will do.
        db.session.rollback()
        _discard(image)
        found = db.session.scalar(select(LinkPreview).where(LinkPreview.url == url))
        return found.id if found is not None and found.ok else None
    return row.id if row.ok else None


def _discard(image: Picture | None) -> None:
    if image is not None:
        store().delete([image.key])


# ---- Showing it --------------------------------------------------------------------------------


def show(message_id: int, url: str, preview_id: int) -> None:
    """Give the message its preview, in the hub's order of changes, and tell its room; nothing
    if the message is gone, edited to another first link, or its author removed its preview."""
    hub = current_runtime().hub
    try:
        with hub.ordered():
            message = db.session.get(Message, message_id)
            if message is None or first_link(message.text) != url:
                return
            changed = changes.attach(message, preview_id)
            if changed is not None and changed.change is not None:
                outside.publish_change(hub, changed, message.user_id, None)
    except (SQLAlchemyError, BackplaneError):
        db.session.rollback()
        log.exception("could not show the preview of message %s", message_id)


def init_app(app: Flask) -> None:
    """Listen to new messages when ``CHAT_PREVIEWS`` is on."""
    previewer = Previewer(app)
    app.extensions[EXTENSION_KEY] = previewer
    if app.config["CHAT_PREVIEWS"]:
        previewer.listen()
