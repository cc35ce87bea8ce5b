"""``flask set-role``, ``deactivate`` and ``reactivate``: the shell's administration, which the
page cannot lock out (it is how a server without an administrator is recovered)."""

import click
from flask.cli import with_appcontext

from admin.actions import AdminError, deactivate, reactivate, set_role
from models import ROLES, User


def _user(email: str) -> User:
    user = User.by_email(email)
    if user is None:
        raise click.ClickException(f"There is no account for {email}.")
    return user


def _done(changed: bool, did: str, already: str) -> None:
    click.echo(did if changed else already)


@click.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(ROLES))
@with_appcontext
def set_role_command(email: str, role: str) -> None:
    """Make EMAIL's account an admin or a member."""
    user = _user(email)
    try:
        changed = set_role(user, role, actor_id=None)
    except AdminError as error:
        raise click.ClickException(str(error.message)) from None
    _done(changed, f"{user.email} is now {role}.", f"{user.email} was already {role}.")


@click.command("deactivate")
@click.argument("email")
@with_appcontext
def deactivate_command(email: str) -> None:
    """Deactivate EMAIL's account: its sessions and sockets end, it cannot log in."""
    user = _user(email)
    changed = deactivate(user, actor_id=None)
    _done(changed, f"{user.email} is deactivated.", f"{user.email} was already deactivated.")


@click.command("reactivate")
@click.argument("email")
@with_appcontext
def reactivate_command(email: str) -> None:
    """Let EMAIL's account log in again."""
    user = _user(email)
    changed = reactivate(user, actor_id=None)
    _done(changed, f"{user.email} is active again.", f"{user.email} was already active.")


COMMANDS = (set_role_command, deactivate_command, reactivate_command)
