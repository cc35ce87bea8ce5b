"""Sending Web Push: a listener of ``core.signals.messages_published`` queues each batch; one
worker thread per process decides who to push (``audience.plan``) and hands each push to a
small pool of sender threads, so that a push service that hangs holds one sender for at most
``CHAT_PUSH_TIMEOUT`` seconds, never the others, and never the committer.

A subscription the push service calls gone (404 or 410) is deleted. The endpoint is the
browser's choice: ``net.guard`` sends, never to a private, loopback or metadata address.
"""

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import delete, update
from sqlalchemy.exc import SQLAlchemyError

from extensions import db
from models import MessageData, PushSubscription, utcnow
from net import guard
from push import audience
from push.keys import VapidKeys
from realtime.backplane import BackplaneError
from realtime.runtime import runtime_of

log = logging.getLogger(__name__)

GONE = {404, 410}  # The push service forgot the subscription: so do we.
SENDS_PER_THREAD = 8  # Pushes waiting for a sender thread, per thread, before the worker waits.
ANSWER_BYTES = 4096  # Of a push service's answer: read, then dropped.
VAPID_LIFETIME = 12 * 3600  # Seconds a signed claim is valid (RFC 8292: at most 24 hours).
IDLE_EXIT = 60.0  # Seconds without a batch after which the worker and its senders end.


class Sender:
    """One app's Web Push queue, worker and senders (started by the first batch, per process)."""

    def __init__(self, app: Flask, keys: VapidKeys) -> None:
        config = app.config
        self._app = app
        self._keys = keys
        self._subject = config["CHAT_VAPID_SUBJECT"]
        self._timeout = float(config["CHAT_PUSH_TIMEOUT"])
        self._ttl = int(config["CHAT_PUSH_TTL"])
        self._threads = max(1, int(config["CHAT_PUSH_SENDERS"]))
        self._queue: queue.Queue[Sequence[MessageData] | None] = queue.Queue(
            config["CHAT_PUSH_QUEUE_SIZE"]
        )
        self._slots = threading.Semaphore(self._threads * SENDS_PER_THREAD)
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._worker: threading.Thread | None = None
        # Batches queued and pushes handed out, not yet done (``wait_idle``).
        self._busy = threading.Condition()
        self._pending = 0
        self._newest = 0  # The highest message id queued so far.

    # ---- The committer's side: queue, never wait -----------------------------------------------

    def on_published(self, _app: Flask, messages: Sequence[MessageData], **_extra: Any) -> None:
        """``messages_published``: queue the batch, or drop it (logged) when the queue is full."""
        with self._busy:
            self._pending += 1
            self._newest = max(self._newest, *(message["id"] for message in messages))
        try:
            self._queue.put_nowait(messages)
        except queue.Full:
            self._done()
            log.warning("the push queue is full: %d messages not pushed", len(messages))
        self._start()  # After the put: a worker that is retiring sees the batch, or is replaced.

    # ---- Life cycle ----------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the worker and the senders once per process (gunicorn forks after the app)."""
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="chat-push-send")
            worker = threading.Thread(target=self._work, name="chat-push", daemon=True)
            worker.start()
            self._worker = worker
            self._pid = os.getpid()

    @property
    def running(self) -> bool:
        """Whether this process has a worker now (it ends when idle, and starts on a batch)."""
        return self._pid == os.getpid()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker and drop what is queued (tests; a worker's exit); pushes under way
        finish first (each within ``CHAT_PUSH_TIMEOUT``), so no thread is left holding a
        database connection."""
        with self._start_lock:
            if self._pid != os.getpid():
                return
            while True:  # Make room for the sentinel: what is queued is dropped anyway.
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            if self._worker is not None:
                self._worker.join(timeout)
            self._pid = None

    def wait_idle(self, timeout: float, message_id: int = 0) -> bool:
        """Wait until message ``message_id`` (0: none) was queued, then until every queued batch
        is planned and every push answered or given up."""
        with self._busy:
            return self._busy.wait_for(
                lambda: self._pending == 0 and self._newest >= message_id, timeout
            )

    def _done(self, count: int = 1) -> None:
        with self._busy:
            self._pending -= count
            self._busy.notify_all()

    # ---- The worker: who to push ---------------------------------------------------------------

    def _work(self) -> None:
        """Plan each batch, hand its pushes to the senders; a failure loses that batch only."""
        pool = self._pool
        while (batch := self._next()) is not None and pool is not None:
            try:
                with self._app.app_context():
                    pushes = audience.plan(batch, self._visible)
            except Exception:  # The worker must outlive any one batch; the next one may work.
                log.exception("could not plan the pushes of %d messages", len(batch))
                pushes = []
            for push in pushes:
                self._slots.acquire()
                with self._busy:
                    self._pending += 1
                try:
                    pool.submit(self._send, push)
                except RuntimeError:  # Shut down meanwhile.
                    self._slots.release()
                    self._done()
            self._done()

    def _next(self) -> Sequence[MessageData] | None:
        """The next batch; None to stop: told to, or idle for ``IDLE_EXIT`` seconds (the next
        batch starts another worker: an app that stops posting keeps no thread)."""
        while True:
            try:
                return self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._start_lock:
                    if self._queue.empty():
                        self._pid = None
                        if self._pool is not None:
                            self._pool.shutdown(wait=False)  # Sends under way finish.
                        return None

    def _visible(self, user_ids: set[int]) -> set[int]:
        """Those with a visible tab; if the backplane cannot tell, nobody (better a push more)."""
        try:
            return runtime_of(self._app).hub.visible_users(user_ids)
        except BackplaneError as error:
            log.warning("could not read who has a visible tab: %s", error)
            return set()

    # ---- A sender: one push --------------------------------------------------------------------

    def _send(self, push: audience.Push) -> None:
        """Encrypt and send one push; forget the subscription if the service says it is gone."""
        try:
            with self._app.app_context():
                self._record(push, self._post(push))
        except SQLAlchemyError:
            log.exception("could not record a push to subscription %s", push.subscription_id)
        except Exception:  # A bug: logged here, since the pool would keep it in a future.
            log.exception("push to subscription %s failed", push.subscription_id)
        finally:
            self._slots.release()
            self._done()

    def _post(self, push: audience.Push) -> int | None:
        """The push service's status for ``push``; None if it could not be reached in time.

        pywebpush encrypts (RFC 8291) and py-vapid signs (RFC 8292); ``net.guard`` sends, as it
        sends everything the server fetches for people: the endpoint is the browser's choice.
        """
        # Imported on the first push: pywebpush brings requests and aiohttp (about 20 MB per
        # process) that a server whose people never enable push should not carry.
        from pywebpush import WebPusher

        subscription = {
            "endpoint": push.endpoint,
            "keys": {"p256dh": push.p256dh, "auth": push.auth},
        }
        body = WebPusher(subscription).encode(push.payload.encode(), "aes128gcm")["body"]
        parts = urlsplit(push.endpoint)
        claims = {
            "sub": self._subject,
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + VAPID_LIFETIME,
        }
        headers = {
            **self._keys.signer.sign(claims),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self._ttl),
            "Urgency": "high",  # A mention or a direct message: worth waking a phone for.
        }
        try:
            answer = guard.fetch(
                "POST",
                push.endpoint,
                body=body,
                headers=headers,
                timeout=self._timeout,
                max_bytes=ANSWER_BYTES,
                max_redirects=0,  # A push service answers; it never redirects.
                truncate=True,
            )
        except guard.FetchError as error:
            log.warning("push to subscription %s failed: %s", push.subscription_id, error.reason)
            return None
        if answer.status >= 300:
            log.info("push to subscription %s refused: %s", push.subscription_id, answer.status)
        return answer.status

    def _record(self, push: audience.Push, status: int | None) -> None:
        """Delete a subscription that is gone; note when one was last pushed to."""
        row = PushSubscription.id == push.subscription_id
        if status in GONE:
            db.session.execute(
                delete(PushSubscription).where(row).execution_options(synchronize_session=False)
            )
            log.info("subscription %s is gone (%s): deleted", push.subscription_id, status)
        elif status is not None and status < 300:
            db.session.execute(
                update(PushSubscription)
                .where(row)
                .values(last_push_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        else:
            return
        db.session.commit()
