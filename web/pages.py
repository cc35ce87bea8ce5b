"""The chat page: the shell the ES modules in ``static/`` fill, with a fresh socket token."""

from flask import Blueprint, Flask, Response, current_app, make_response, render_template
from flask_login import current_user, login_required

from accounts.tokens import issue_token
from i18n import jscatalog

bp = Blueprint("chat", __name__)


@bp.get("/")
@login_required
def index() -> Response:
    """The chat page, carrying a fresh token for the socket."""
    page = render_template(
        "chat.html",
        token=issue_token(current_user),
        config=current_app.config,
        js_catalog=jscatalog.catalog(),
    )
    response = make_response(page)
    response.headers["Cache-Control"] = "no-store"  # The page holds a token.
    return response


def init_app(app: Flask) -> None:
    """Register the page."""
    app.register_blueprint(bp)
