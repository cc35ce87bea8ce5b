"""The application factory: ``flask run`` and ``gunicorn 'app:create_app()'`` start here."""

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

import accounts
import accounts.digest_views
import admin
import api
import archive
import bots
import files
import i18n
import models
import ops
import previews
import push
import realtime
from config import Config, finalize, load_environment
from core import throttle
from extensions import csrf, limiter
from ops import logs
from web import errors, pages


def content_security_policy(image_sources: str = "") -> str:
    """The pages' policy: nothing inline, nothing from elsewhere but ``image_sources``."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data:{' ' + image_sources if image_sources else ''}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create and configure an app; ``test_config`` overrides every other setting."""
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_object(Config)
    app.config.from_pyfile("config.py", silent=True)
    load_environment(app.config)
    if test_config:
        app.config.from_mapping(test_config)
    finalize(app.config, app.instance_path)
    logs.init_app(app)

    models.init_app(app)
    i18n.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    throttle.init_app(app)
    accounts.init_app(app)
    accounts.digest_views.init_app(app)
    api.init_app(app)
    files.init_app(app)
    archive.init_app(app)
    admin.init_app(app)
    bots.init_app(app)
    pages.init_app(app)
    realtime.init_app(app)
    previews.init_app(app)
    push.init_app(app)
    errors.init_app(app)
    ops.init_app(app)
    # Presigned file addresses send the page's images to the store: allow its origin.
    policy = content_security_policy(files.store.image_origin(app.config))

    def set_security_headers(response: Response) -> Response:
        return _set_security_headers(response, policy)

    app.after_request(set_security_headers)
    hops = app.config["CHAT_PROXY_HOPS"]
    if hops:
        # Behind nginx: the client's address (rate limits), scheme and host (Origin check).
        # Flask's documented way to wrap its WSGI app; mypy refuses any assignment to a method.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    return app


def _set_security_headers(response: Response, policy: str) -> Response:
    """Headers every response carries (no inline script anywhere, no framing)."""
    response.headers.setdefault("Content-Security-Policy", policy)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response
