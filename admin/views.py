"""``/admin``: people (search, role, deactivation, a password-reset link), rooms (rename, topic,
archive, delete), invitation links, the registration policy and the audit log. Administrators
only; anyone else gets 403.

Every change is a small POST form (CSRF-protected like every form here) that redirects back
with a flash saying what happened: a reload never repeats it.
"""

from datetime import timedelta

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from sqlalchemy import func, or_, select
from werkzeug.wrappers import Response

from accounts import invitations
from accounts.policy import POLICIES, registration_policy
from admin import actions
from core import rooms as room_rules
from core.audit import audit
from core.signals import announce_deleted, announce_update
from extensions import db
from files import uploads
from models import DIRECT, AuditEntry, Invitation, Membership, Message, Room, User, utcnow

bp = Blueprint("admin", __name__, url_prefix="/admin")

PEOPLE_SHOWN = 200
AUDIT_SHOWN = 100
LINK_KEY = "admin_link"  # A link made by the last action, shown once on the page.
MAX_INVITE_DAYS = 365
MAX_INVITE_USES = 10_000

# How the audit log names each action (``core.audit`` stores the code).
ACTIONS = {
    "set_role": _l("Role changed"),
    "deactivate": _l("Deactivated"),
    "reactivate": _l("Reactivated"),
    "reset_link": _l("Password-reset link made"),
    "set_registration": _l("Registration policy"),
    "create_invitation": _l("Invitation link made"),
    "revoke_invitation": _l("Invitation link revoked"),
    "delete_message": _l("Message deleted"),
    "remove_member": _l("Removed from a room"),
    "rename_room": _l("Room renamed"),
    "archive_room": _l("Room archived"),
    "unarchive_room": _l("Room unarchived"),
    "delete_room": _l("Room deleted"),
}


@bp.before_request
@login_required
def _administrators_only() -> None:
    """Every page and form here: 403 for anyone signed in who is not an administrator."""
    if not current_user.is_admin:
        abort(403)


@bp.get("/")
def index() -> str:
    """The whole admin page."""
    query = request.args.get("q", "").strip()[:100]
    people = select(User).order_by(User.email).limit(PEOPLE_SHOWN)
    if query:
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        people = people.where(
            or_(
                User.email.ilike(pattern, escape="\\"),
                User.display_name.ilike(pattern, escape="\\"),
            )
        )
    entries = db.session.scalars(
        select(AuditEntry).order_by(AuditEntry.id.desc()).limit(AUDIT_SHOWN)
    ).all()
    actors = {entry.actor_id for entry in entries if entry.actor_id is not None}
    shown = db.session.scalars(select(User).where(User.id.in_(actors)))
    names = {user.id: user.name for user in shown}  # Only the people the log names.
    return render_template(
        "admin.html",
        query=query,
        people=db.session.scalars(people).all(),
        invitations=db.session.scalars(select(Invitation).order_by(Invitation.id.desc())).all(),
        invitation_state=invitations.state,
        rooms=(listed := _rooms()),
        room_titles=lambda keys: ", ".join(
            next((f"#{room.title}" for room, _, _ in listed if room.key == key), key)
            for key in keys.split()
        ),
        actions=ACTIONS,
        policy=registration_policy(),
        policies=POLICIES,
        entries=entries,
        names=names,
        new_link=session.pop(LINK_KEY, None),
    )


def _rooms() -> list[tuple[Room, int, int]]:
    """Every room but direct ones: ``(room, members, messages)``, by name."""
    members = (
        select(func.count(Membership.user_id))
        .where(Membership.room_id == Room.id)
        .scalar_subquery()
    )
    posted = select(func.count(Message.id)).where(Message.room_id == Room.id).scalar_subquery()
    rows = db.session.execute(
        select(Room, members, posted).where(Room.kind != DIRECT).order_by(Room.key)
    ).all()
    return [(room, count, total) for room, count, total in rows]


def _person(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    return user


def _back(message: str, category: str = "success", link: str | None = None) -> Response:
    """Back to the page, saying what happened (and a link to hand over, shown once)."""
    flash(message, category)
    if link:
        session[LINK_KEY] = link  # Not in the URL: a link in a URL ends up in logs and history.
    return redirect(url_for("admin.index"))


@bp.post("/people/<int:user_id>/role")
def set_role(user_id: int) -> Response:
    """Make someone an administrator or a member."""
    user = _person(user_id)
    try:
        changed = actions.set_role(user, request.form.get("role", ""), current_user.id)
    except actions.AdminError as error:
        return _back(str(error.message), "error")
    role = _("administrator") if user.is_admin else _("member")
    if not changed:
        return _back(_("%(name)s was already %(role)s.", name=user.name, role=role), "info")
    return _back(_("%(name)s is now %(role)s.", name=user.name, role=role))


@bp.post("/people/<int:user_id>/deactivate")
def deactivate(user_id: int) -> Response:
    """Deactivate someone: at once, everywhere."""
    user = _person(user_id)
    try:
        actions.deactivate(user, current_user.id)
    except actions.AdminError as error:
        return _back(str(error.message), "error")
    return _back(_("%(name)s is deactivated and signed out everywhere.", name=user.name))


@bp.post("/people/<int:user_id>/reactivate")
def reactivate(user_id: int) -> Response:
    """Let someone log in again."""
    user = _person(user_id)
    actions.reactivate(user, current_user.id)
    return _back(_("%(name)s can log in again.", name=user.name))


@bp.post("/people/<int:user_id>/reset")
def reset_link(user_id: int) -> Response:
    """A one-time link to set a new password, shown once, to hand over."""
    user = _person(user_id)
    if not user.is_active:
        return _back(_("Reactivate the account first."), "error")
    token = actions.reset_link(user, current_user.id)
    link = url_for("accounts.reset_password", token=token, _external=True)
    return _back(_("A password-reset link for %(name)s:", name=user.name), "info", link=link)


@bp.post("/registration")
def set_registration() -> Response:
    """Who may make an account."""
    try:
        actions.set_registration_policy(request.form.get("policy", ""), current_user.id)
    except actions.AdminError as error:
        return _back(str(error.message), "error")
    return _back(_("Registration is now: %(policy)s.", policy=registration_policy()))


@bp.post("/invitations")
def create_invitation() -> Response:
    """A new invitation link: it expires after some days, after some uses, into some rooms."""
    days, uses = _bounded("days", MAX_INVITE_DAYS), _bounded("uses", MAX_INVITE_USES)
    if days is False or uses is False:
        return _back(_("Days and uses are whole numbers from 1, or empty for no limit."), "error")
    known = {room.key for room in db.session.scalars(select(Room).where(Room.kind != DIRECT))}
    rooms = [key for key in request.form.getlist("rooms") if key in known]
    expires = utcnow() + timedelta(days=days) if days else None
    invitation, secret = invitations.create(current_user.id, expires, uses or None, rooms)
    audit(current_user.id, "create_invitation", "invitation", invitation.id, " ".join(rooms))
    db.session.commit()
    link = url_for("accounts.join", secret=secret, _external=True)
    return _back(_("A new invitation link (shown once):"), "info", link=link)


def _bounded(name: str, largest: int) -> int | bool | None:
    """A form's optional whole number in 1..largest: None when empty, False when not."""
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= largest:
        return False
    return int(raw)


@bp.post("/invitations/<int:invitation_id>/revoke")
def revoke_invitation(invitation_id: int) -> Response:
    """The link makes no more accounts."""
    invitation = db.session.get(Invitation, invitation_id)
    if invitation is None:
        abort(404)
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        audit(current_user.id, "revoke_invitation", "invitation", invitation.id)
        db.session.commit()
    return _back(_("The invitation is revoked."))


def _room(room_id: int) -> Room:
    room = db.session.get(Room, room_id)
    if room is None or room.kind == DIRECT:  # Direct rooms are nobody else's business.
        abort(404)
    return room


@bp.post("/rooms/<int:room_id>")
def update_room(room_id: int) -> Response:
    """Rename a room and set its topic; open tabs show it at once."""
    room = _room(room_id)
    title, topic = request.form.get("title", "").strip(), request.form.get("topic")
    try:
        name = room_rules.parse_room_name(title) if title else None
        change = room_rules.Update(name, topic)
        changed = room_rules.update_room(room, change, current_user.id)
    except room_rules.RoomError as error:
        db.session.rollback()
        return _back(str(error.message), "error")
    if not changed:
        return _back(_("Nothing changed."), "info")
    announce_update(room.id, current_user.id)
    return _back(_("The room %(room)s is saved.", room=room.title))


@bp.post("/rooms/<int:room_id>/archive")
def archive_room(room_id: int) -> Response:
    """Archive a room (read-only, still searchable), or make it writable again."""
    room = _room(room_id)
    archived = request.form.get("archived") != "0"
    try:
        changed = room_rules.set_archived(room, archived, current_user.id)
    except room_rules.RoomError as error:
        return _back(str(error.message), "error")
    if changed:
        announce_update(room.id, current_user.id)
    if archived:
        return _back(_("%(room)s is archived: read-only, still searchable.", room=room.title))
    return _back(_("%(room)s is writable again.", room=room.title))


@bp.post("/rooms/<int:room_id>/delete")
def delete_room(room_id: int) -> Response:
    """Delete a room for good, once its name is typed to confirm."""
    room = _room(room_id)
    if request.form.get("confirm", "").strip() != room.title:
        message = _("Type the room's name, %(room)s, to delete it.", room=room.title)
        return _back(message, "error")
    title = room.title
    try:
        deleted = room_rules.delete_room(room, current_user.id)
    except room_rules.RoomError as error:
        return _back(str(error.message), "error")
    uploads.discard(deleted.file_keys)  # Once the rows are gone for good.
    announce_deleted(deleted, current_user.id)
    return _back(_("%(room)s is deleted, with its messages and files.", room=title))


def init_app(app: Flask) -> None:
    """Register the page."""
    app.register_blueprint(bp)
