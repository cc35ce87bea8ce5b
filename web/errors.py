"""Error responses: JSON for the API and the socket route, HTML pages for people."""

from flask import Flask, Response, jsonify, render_template, request
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

JSON_PREFIXES = ("/api/", "/ws", "/push/", "/hooks/")
CSRF_HELP = _l("This form expired or did not come from this site. Reload the page and try again.")
# What people read on an error page, in their language (programs get Werkzeug's JSON text).
PAGE_MESSAGES = {
    400: _l("The request could not be understood."),
    403: _l("You may not open this page."),
    404: _l("There is no page at this address."),
    405: _l("This page cannot be used that way."),
    429: _l("Too many attempts. Wait a minute, then try again."),
    500: _l("Something went wrong on our side. Try again in a moment."),
}


def json_error(status: int, code: str, message: str | None = None) -> tuple[Response, int]:
    """A JSON error response: ``{"error": code, "message": ...}`` with ``status``."""
    body: dict[str, str] = {"error": code}
    if message:
        body["message"] = message
    return jsonify(body), status


def _wants_json() -> bool:
    """API and socket clients are programs: they get JSON errors; so does a page's own script
    that asks for JSON first (the avatar upload's XHR), wherever it posts."""
    if request.path.startswith(JSON_PREFIXES):
        return True
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == (
        "application/json"
    )


def _handle_http_error(error: HTTPException) -> tuple[Response, int] | tuple[str, int]:
    """An HTTP error as JSON for programs, or as a page for people."""
    # Flask returns an exception without a code (``abort(response)``) as is, never to a handler.
    assert error.code is not None
    if _wants_json():
        code = "rate_limited" if error.code == 429 else error.name.lower().replace(" ", "_")
        return json_error(error.code, code, error.description)
    message = PAGE_MESSAGES.get(error.code, error.description)
    return render_template("error.html", error=error, message=message), error.code


def _handle_csrf_error(error: CSRFError) -> tuple[Response, int] | tuple[str, int]:
    """A form without a valid CSRF token: say so plainly."""
    if _wants_json():
        return json_error(400, "csrf_failed", error.description)
    return render_template("error.html", error=error, message=CSRF_HELP), 400


def init_app(app: Flask) -> None:
    """Register the error handlers."""
    app.register_error_handler(CSRFError, _handle_csrf_error)
    app.register_error_handler(HTTPException, _handle_http_error)
