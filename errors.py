"""Error responses: JSON for the API and the socket route, HTML pages for people."""

from flask import jsonify, request
from werkzeug.exceptions import HTTPException

JSON_PREFIXES = ("/api/", "/ws")


def json_error(status, code, message=None):
    """A JSON error response: ``{"error": code, "message": ...}`` with ``status``."""
    body = {"error": code}
    if message:
        body["message"] = message
    return jsonify(body), status


def _wants_json():
    """API and socket clients are programs: they get JSON errors."""
    return request.path.startswith(JSON_PREFIXES)


def _handle_http_error(error):
    """Turn an HTTP error into JSON for programs; leave HTML pages to Flask."""
    if not _wants_json():
        return error
    code = error.name.lower().replace(" ", "_")
    return json_error(error.code, code, error.description)


def init_app(app):
    """Register the error handlers."""
    app.register_error_handler(HTTPException, _handle_http_error)
