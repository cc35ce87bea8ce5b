"""Link previews: the first link of a message gets a card (title, description, image) from its
page's OpenGraph tags, fetched by the server through the SSRF guard (``service.py``), shown as a
change of the message, removable by its author (``changes.py``), its image served by
``views.py``."""

from flask import Flask

from previews import service, views


def init_app(app: Flask) -> None:
    """Register the image's route and, when ``CHAT_PREVIEWS`` is on, the listener."""
    app.register_blueprint(views.bp)
    service.init_app(app)
