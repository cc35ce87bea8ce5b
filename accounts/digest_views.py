"""The digest's pages and command: the unsubscribe link of every digest, the profile's checkbox,
and ``flask send-digests`` (run from cron or a systemd timer, docs/deploy.md)."""

import click
from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask.cli import with_appcontext
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from accounts import digest
from extensions import csrf, db
from models import User

bp = Blueprint("digest", __name__)


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe(token: str) -> tuple[str, int]:
    """GET asks (mail scanners follow links: they must not unsubscribe anyone); a POST, from the
    page's button or a mail program's one-click (RFC 8058), turns the digest off."""
    user = digest.user_of_unsubscribe(token)
    if user is None:
        return render_template("unsubscribe.html", state="invalid"), 404
    if request.method == "GET":
        return render_template("unsubscribe.html", state="confirm", token=token), 200
    user.digest = False
    db.session.commit()
    return render_template("unsubscribe.html", state="done"), 200


@bp.post("/profile/digest")
@login_required
def save_setting() -> Response:
    """The profile's checkbox: the digest on or off."""
    user: User = current_user._get_current_object()
    user.digest = request.form.get("digest") == "on"
    db.session.commit()
    if user.digest:
        flash(_("You will get a digest of the mentions and direct messages you miss."), "success")
    else:
        flash(_("You will get no digest by email."), "success")
    return redirect(url_for("accounts.profile"))


@click.command("send-digests")
@with_appcontext
def send_digests_command() -> None:
    """Mail each person the mentions and direct messages they missed."""
    try:
        run = digest.send_digests()
    except digest.NotConfigured as error:
        raise click.ClickException(f"{error}: no digest can be sent.") from None
    click.echo(f"Digests sent: {run.sent}, failed: {run.failed}.")
    if run.failed:
        raise click.exceptions.Exit(1)  # Cron mails it, systemd marks the unit failed.


def init_app(app: Flask) -> None:
    """Register the pages, the profile's template global and the command."""
    csrf.exempt(unsubscribe)  # Signed by its token; a mail program's POST carries no CSRF token.
    app.register_blueprint(bp)
    app.add_template_global(digest.digests_enabled, "digests_enabled")
    app.cli.add_command(send_digests_command)
