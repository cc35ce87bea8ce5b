"""Mail, when ``CHAT_SMTP_URL`` is set: messages rendered in their reader's language and sent by
one background thread, so that no request waits on the SMTP server or shows what it did.

A request hands the outbox a job (a function run later in an app context, which returns the
message to send, or None); the job, not the request, looks the account up, so that the answer
takes the same time whether it exists or not. Each message is tried once: a failure is logged.
"""

import logging
import queue
import smtplib
import ssl
import threading
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import urlsplit

from flask import Flask, current_app, render_template
from flask_babel import get_locale

from config import SmtpSettings, smtp_settings
from i18n import DEFAULT_LANGUAGE

log = logging.getLogger(__name__)

EXTENSION = "chat.mail"
QUEUE_SIZE = 100  # jobs waiting at most; past it a new one is dropped (and logged)

Job = Callable[[], EmailMessage | None]


class InsecureServer(smtplib.SMTPException):
    """The server offers no STARTTLS, and the URL has a password to send."""


class Outbox:
    """A bounded queue of jobs and the one daemon thread that runs them and sends their mail."""

    def __init__(self, app: Flask, settings: SmtpSettings) -> None:
        self.app = app
        self.settings = settings
        self._jobs: queue.Queue[Job | None] = queue.Queue(QUEUE_SIZE)
        # Guards the thread's start and the count of jobs not yet done; no I/O under it.
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._pending = 0
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> bool:
        """Queue ``job`` without waiting; False (logged) when the queue is full."""
        with self._lock:
            if self._thread is None:  # Started with the first mail: most apps send none.
                self._thread = threading.Thread(target=self._run, name="mail", daemon=True)
                self._thread.start()
            try:
                self._jobs.put_nowait(job)
            except queue.Full:
                log.warning("mail dropped: %d are already waiting to be sent", QUEUE_SIZE)
                return False
            self._pending += 1
        return True

    def wait_idle(self, timeout: float) -> bool:
        """True once every job submitted so far has run (what tests wait on)."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 10) -> None:
        """Run the jobs queued so far, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None, timeout=timeout)
            thread.join(timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._run_one(job)
            finally:
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()

    def _run_one(self, job: Job) -> None:
        """Make the job's message, then send it, outside the app context (no database session
        held while the SMTP server takes its time)."""
        with self.app.app_context():
            try:
                message = job()
            except Exception:  # A bug in one job must not end the mail of every later one.
                log.exception("mail not composed")
                return
        if message is None:
            return
        try:
            deliver(self.settings, message)
        except (smtplib.SMTPException, OSError, ValueError) as error:
            # The server's answer or the socket's error: neither holds the password or the link.
            log.warning(
                "mail not sent through %s:%d: %s: %s",
                self.settings.host,
                self.settings.port,
                type(error).__name__,
                error,
            )
        else:
            log.info("mail sent through %s:%d", self.settings.host, self.settings.port)


def deliver(settings: SmtpSettings, message: EmailMessage) -> None:
    """Send ``message`` once; raise ``smtplib.SMTPException`` or ``OSError`` if it fails."""
    context = ssl.create_default_context()
    if settings.implicit_tls:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=context
        )
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    with smtp:
        smtp.ehlo()
        secure = settings.implicit_tls
        if settings.starttls and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
            secure = True
        if settings.username is not None:
            # A server that stopped offering STARTTLS may be someone in the way: no password
            # in clear unless the URL says so (?starttls=no).
            if settings.starttls and not secure:
                raise InsecureServer("no STARTTLS offered: the password is not sent in clear")
            smtp.login(settings.username, settings.password or "")
        smtp.send_message(message)


def init_app(app: Flask) -> None:
    """Make the app's outbox when ``CHAT_SMTP_URL`` is set (config.finalize checked it)."""
    url = app.config["CHAT_SMTP_URL"]
    if url:
        app.extensions[EXTENSION] = Outbox(app, smtp_settings(url))


def outbox() -> Outbox | None:
    """The current app's outbox; None without ``CHAT_SMTP_URL``."""
    found = current_app.extensions.get(EXTENSION)
    return found if isinstance(found, Outbox) else None


def compose(to: str, subject: str, template: str, **context: object) -> EmailMessage:
    """A message with a text and an HTML part: ``email/<template>_text.html`` and
    ``email/<template>.html`` (both ``.html``, so ``make i18n`` extracts their strings)."""
    sender = current_app.config["CHAT_MAIL_FROM"]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    # The sender's domain, not the machine's name (make_msgid would look it up).
    message["Message-ID"] = make_msgid(domain=_domain_of(sender))
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies.
    message.set_content(render_template(f"email/{template}_text.html", **context))
    message.add_alternative(render_template(f"email/{template}.html", **context), subtype="html")
    # After the parts: setting content clears every Content-* header.
    message["Content-Language"] = str(get_locale() or DEFAULT_LANGUAGE)
    return message


def _domain_of(sender: str) -> str:
    """The domain of a ``CHAT_MAIL_FROM`` like ``chat@example.com`` or ``Chat <chat@…>``."""
    return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


def external_url(base_url: str, endpoint: str, **values: str) -> str:
    """The absolute address of ``endpoint`` under ``base_url`` (``scheme://host[:port]``),
    outside any request."""
    parts = urlsplit(base_url)
    adapter = current_app.url_map.bind(parts.netloc, url_scheme=parts.scheme)
    return adapter.build(endpoint, values, force_external=True)
