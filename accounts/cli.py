"""``flask create-user``: make an account from the shell."""

import click
from flask.cli import with_appcontext

from accounts.forms import DUPLICATE_EMAIL, normalize_email, password_problem
from accounts.policy import promote_if_first
from extensions import db
from models import User


@click.command("create-user")
@click.argument("email")
@click.password_option(help="Prompted for (hidden, twice) when not given.")
@with_appcontext
def create_user_command(email: str, password: str) -> None:
    """Create an account for EMAIL."""
    try:
        email = normalize_email(email)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="EMAIL") from None
    problem = password_problem(password, email)
    if problem:
        raise click.BadParameter(problem, param_hint="--password")
    if User.by_email(email) is not None:
        raise click.ClickException(DUPLICATE_EMAIL)
    user = User(email=email)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    promote_if_first(user)
    db.session.commit()
    role = " (administrator: the server's first account)" if user.is_admin else ""
    click.echo(f"Created user {user.name} <{email}>{role}.")
