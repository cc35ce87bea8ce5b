"""Languages: which one a request gets, and the helpers templates use (Flask-Babel)."""

from flask import Flask, g, has_request_context, request
from flask_babel import get_locale
from flask_login import current_user

from extensions import babel

# The languages the page is translated into, by code, each named in itself.
LANGUAGES = {"en": "English", "fr": "Français"}
DEFAULT_LANGUAGE = "en"


def select_locale() -> str:
    """The user's saved choice, else the browser's preference (Accept-Language), else English."""
    if not has_request_context():
        return DEFAULT_LANGUAGE  # CLI commands speak English.
    # A socket authenticated by token (no session) sets its user's choice here.
    if g.get("chat_locale") in LANGUAGES:
        return g.chat_locale
    if current_user and current_user.is_authenticated and current_user.locale in LANGUAGES:
        return current_user.locale
    return request.accept_languages.best_match(LANGUAGES, default=DEFAULT_LANGUAGE)


def _template_globals() -> dict[str, str]:
    """``current_locale`` for ``<html lang>``."""
    return {"current_locale": str(get_locale() or DEFAULT_LANGUAGE)}


def init_app(app: Flask) -> None:
    """Bind Flask-Babel with our locale selector; compiled catalogs live in ``translations/``."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANGUAGE)
    babel.init_app(app, locale_selector=select_locale)
    app.context_processor(_template_globals)
