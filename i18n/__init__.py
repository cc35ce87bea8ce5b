"""Languages: which one a request gets, and the helpers templates use (Flask-Babel)."""

import struct
from pathlib import Path

from babel.messages.mofile import read_mo
from flask import Flask, g, has_request_context, request
from flask_babel import get_babel, get_locale
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


def _translates_something(path: Path) -> bool:
    """True if the compiled catalog at ``path`` reads and translates at least one message."""
    try:
        with path.open("rb") as file:
            return any(message.id and message.string for message in read_mo(file))
    except (OSError, struct.error):  # Truncated or not a catalog at all.
        return False


def _template_globals() -> dict[str, str]:
    """``current_locale`` for ``<html lang>``."""
    return {"current_locale": str(get_locale() or DEFAULT_LANGUAGE)}


def init_app(app: Flask) -> None:
    """Bind Flask-Babel with our locale selector; refuse to start without a language's catalog.

    The compiled catalogs (``translations/*/LC_MESSAGES/messages.mo``) are committed beside
    their ``.po`` files, so every way of installing the app has them (docs/decisions.md).
    """
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANGUAGE)
    babel.init_app(app, locale_selector=select_locale)
    with app.app_context():
        directories = get_babel().translation_directories
    for code in LANGUAGES.keys() - {DEFAULT_LANGUAGE}:
        _require_catalog(code, [Path(directory) for directory in directories])
    app.context_processor(_template_globals)


def _require_catalog(code: str, directories: list[Path]) -> None:
    """Raise unless a compiled, non-empty catalog for ``code`` is in one of ``directories``.

    Without it Flask-Babel would silently serve English under ``<html lang="fr">``.
    """
    for directory in directories:
        path = directory / code / "LC_MESSAGES" / "messages.mo"
        if path.is_file():
            if _translates_something(path):
                return
            raise RuntimeError(f"The {LANGUAGES[code]} catalog {path} holds no translation.")
    where = ", ".join(str(d / code / "LC_MESSAGES" / "messages.mo") for d in directories)
    raise RuntimeError(
        f"No compiled {LANGUAGES[code]} catalog: {where} is missing. It is committed with the"
        " code; after editing a .po file run `make catalogs` (pybabel compile -d translations)."
    )
