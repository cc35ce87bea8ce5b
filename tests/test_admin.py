"""Running the server (issue 20): roles, deactivation, moderation, the registration policy,
invitation links and password-reset links, each recorded in the audit log.

Pages over Flask's test client, sockets over real WebSockets (a threaded server, then two
gunicorn instances joined by Redis for deactivation), the shell's commands through Click.
"""

import re
from contextlib import ExitStack
from datetime import timedelta

import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts import invitations
from admin import actions
from extensions import db
from helpers import PASSWORD, ChatClient, csrf_token, login, submit_form, token_issued_at
from models import ADMIN, MEMBER, AuditEntry, Invitation, Membership, Room, User, utcnow


def user(app, email):
    with app.app_context():
        found = User.by_email(email)
        db.session.expunge(found)
        return found


def audit_actions(app):
    with app.app_context():
        entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(e.actor_id, e.action, e.target_type, e.target_id) for e in entries]


def register(client, email):
    return submit_form(
        client, "/register", {"email": email, "password": PASSWORD, "confirm": PASSWORD}
    )


def until(chat, kind):
    """The next frame of type ``kind``; frames of other kinds (room_created, presence) skipped."""
    while (frame := chat.recv())["type"] != kind:
        pass
    return frame


def closed_with(chat):
    """The close code once the server closed ``chat``, reading what was left before it."""
    while True:
        try:
            chat.recv()
        except ConnectionClosed:
            return chat.ws.close_code


# ---- Roles ----------------------------------------------------------------------------------


def test_the_first_account_administers_and_the_next_ones_are_members(app):
    first, second = app.test_client(), app.test_client()
    assert register(first, "root@example.com").status_code == 302
    assert register(second, "someone@example.com").status_code == 302
    assert user(app, "root@example.com").role == ADMIN
    assert user(app, "someone@example.com").role == MEMBER


def test_create_user_makes_the_first_account_an_administrator(app, runner):
    result = runner.invoke(args=["create-user", "root@example.com", "--password", PASSWORD])
    assert "administrator" in result.output
    runner.invoke(args=["create-user", "next@example.com", "--password", PASSWORD])
    assert [user(app, e).role for e in ("root@example.com", "next@example.com")] == [ADMIN, MEMBER]


def test_set_role_from_the_shell_is_audited_and_may_demote_the_last_admin(app, runner, alice):
    result = runner.invoke(args=["set-role", "alice@example.com", "admin"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "alice@example.com is now admin."
    again = runner.invoke(args=["set-role", "alice@example.com", "admin"])
    assert again.output.strip() == "alice@example.com was already admin."
    # The shell is the recovery path: it may leave the server without an administrator.
    assert runner.invoke(args=["set-role", "alice@example.com", "member"]).exit_code == 0
    assert user(app, "alice@example.com").role == MEMBER
    assert audit_actions(app) == [(None, "set_role", "user", alice)] * 2
    unknown = runner.invoke(args=["set-role", "nobody@example.com", "admin"])
    assert unknown.exit_code == 1
    assert "There is no account for nobody@example.com." in unknown.output
    bad = runner.invoke(args=["set-role", "alice@example.com", "owner"])
    assert bad.exit_code == 2


def test_the_page_never_demotes_or_deactivates_the_last_administrator(app, alice, bob):
    with app.app_context():
        root = db.session.get(User, alice)
        actions.set_role(root, ADMIN, actor_id=None)
        for action in (
            lambda: actions.set_role(root, MEMBER, bob),
            lambda: actions.deactivate(root, bob),
        ):
            with pytest.raises(actions.AdminError) as refused:
                action()
            assert refused.value.code == "last_admin"
        with pytest.raises(actions.AdminError):
            actions.deactivate(root, alice)  # Nor oneself.
        other = db.session.get(User, bob)
        assert actions.set_role(other, ADMIN, alice)
        assert actions.set_role(root, MEMBER, bob)  # Now someone else runs it.


# ---- Deactivation ---------------------------------------------------------------------------


def test_deactivation_ends_sessions_tokens_and_sockets_and_keeps_messages(
    app, runner, ws_connect, alice, bob
):
    browser = app.test_client()
    login(browser, "bob@example.com")
    assert browser.get("/").status_code == 200
    watcher, doomed = ws_connect(alice), ws_connect(bob)
    doomed.send({"type": "message", "text": "still here later", "client_id": "kept"})
    saved = doomed.recv_type("message")
    watcher.recv_type("message")

    result = runner.invoke(args=["deactivate", "bob@example.com"])
    assert result.exit_code == 0, result.output
    assert closed_with(doomed) == 4001
    watcher.await_presence(offline=[bob])
    assert browser.get("/").status_code == 302  # The session is gone.
    again = app.test_client()
    refused = login(again, "bob@example.com")
    assert refused.status_code == 403
    assert "This account is deactivated" in refused.text
    wrong = submit_form(again, "/login", {"email": "bob@example.com", "password": "not it!!"})
    assert wrong.status_code == 401  # A wrong password learns nothing of the account.
    api = app.test_client().post(
        "/api/token", json={"email": "bob@example.com", "password": PASSWORD}
    )
    assert (api.status_code, api.json["error"]) == (403, "deactivated")
    with pytest.raises(Exception):  # noqa: B017, PT011 - the upgrade is refused, whatever the type
        ws_connect(bob)
    # The message stays, with its author's name; they are not suggested for mentions.
    watcher.send({"type": "history", "room": "general"})
    page = watcher.recv_type("history")
    assert [(m["id"], m["user"]) for m in page["messages"]] == [(saved["id"], "bob")]
    watcher.send({"type": "members", "room": "general"})
    members = watcher.recv_type("members")
    assert [person["id"] for person in members["members"]] == [alice]
    watcher.send({"type": "open_dm", "user_id": bob, "client_id": "dm"})
    assert watcher.recv_type("error")["code"] == "not_found"

    assert runner.invoke(args=["reactivate", "bob@example.com"]).exit_code == 0
    assert login(app.test_client(), "bob@example.com").status_code == 302
    assert [a[1] for a in audit_actions(app)] == ["deactivate", "reactivate"]


def test_deactivation_from_the_shell_closes_sockets_on_every_worker(
    app, make_app, make_user, scaled_config, start_servers
):
    bob = make_user("bob@example.com")[0]
    first, second = start_servers(scaled_config, instances=2, workers=1)
    token = token_issued_at(app, bob)
    with ExitStack() as stack:
        sockets = [
            ChatClient(
                stack.enter_context(
                    connect(f"ws://127.0.0.1:{server.port}/ws?token={token}", open_timeout=5)
                )
            )
            for server in (first, second)
        ]
        for chat in sockets:
            chat.recv_type("hello")
        shell = make_app(scaled_config)  # As `flask deactivate` runs: its own app, one Redis.
        result = shell.test_cli_runner().invoke(args=["deactivate", "bob@example.com"])
        assert result.exit_code == 0, result.output
        for chat in sockets:
            assert closed_with(chat) == 4001


# ---- Moderation -----------------------------------------------------------------------------


def make_admin(app, user_id):
    with app.app_context():
        actions.set_role(db.session.get(User, user_id), ADMIN, actor_id=None)


def test_an_administrator_deletes_anyones_message_and_only_that(app, ws_connect, alice, bob):
    make_admin(app, alice)
    admin, author = ws_connect(alice), ws_connect(bob)
    author.send({"type": "message", "text": "spam spam", "client_id": "spam"})
    spam = author.recv_type("message")
    admin.recv_type("message")
    # A member may not delete someone else's, and an administrator may not edit it.
    author_again = ws_connect(bob)
    admin.send({"type": "edit", "id": spam["id"], "text": "nicer words", "client_id": "e1"})
    assert admin.recv_type("error")["code"] == "forbidden"
    admin.send({"type": "delete", "id": spam["id"], "client_id": "d1"})
    changed = admin.recv_type("message_changed")
    assert changed["message"]["deleted"] is True
    assert author_again.recv_type("message_changed")["message"]["id"] == spam["id"]
    assert audit_actions(app)[-1] == (alice, "delete_message", "message", spam["id"])
    admin.send({"type": "message", "text": "mine", "client_id": "mine"})
    mine = admin.recv_type("message")
    author.recv_type("message_changed")
    author.recv_type("message")
    author.send({"type": "delete", "id": mine["id"], "client_id": "d2"})
    assert author.recv_type("error")["code"] == "forbidden"


def test_an_administrator_removes_someone_from_a_room(app, ws_connect, alice, bob, make_user):
    carol = make_user("carol@example.com")[0]
    make_admin(app, alice)
    admin, target, member = ws_connect(alice), ws_connect(bob), ws_connect(carol)
    target.send({"type": "create_room", "name": "python"})  # Not the administrator's own room.
    until(target, "room")
    for chat in (admin, member):
        chat.send({"type": "join_room", "room": "python"})
        until(chat, "room")
    member.send({"type": "remove_member", "room": "python", "user_id": bob, "client_id": "m"})
    assert until(member, "error")["code"] == "forbidden"
    admin.send({"type": "remove_member", "room": "general", "user_id": bob, "client_id": "g"})
    assert until(admin, "error")["code"] == "bad_request"
    admin.send({"type": "remove_member", "room": "python", "user_id": bob, "client_id": "r"})
    done = until(admin, "member_removed")
    assert done == {"type": "member_removed", "room": "python", "user_id": bob, "client_id": "r"}
    left = until(target, "room_left")
    assert left == {"type": "room_left", "room": "python", "removed_by": alice}
    target.send({"type": "message", "room": "python", "text": "back?", "client_id": "x"})
    assert until(target, "error")["code"] == "forbidden"
    member.await_presence(offline=[bob], room="python")  # The room sees them go.
    admin.send({"type": "remove_member", "room": "python", "user_id": bob, "client_id": "r2"})
    assert until(admin, "error")["code"] == "not_found"
    with app.app_context():
        python = db.session.scalar(select(Room).where(Room.key == "python"))
        assert db.session.get(Membership, (python.id, bob)) is None
    assert audit_actions(app)[-1][1:3] == ("remove_member", "room")


# ---- Registration and invitations -----------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "says"), [("closed", "make its accounts"), ("invite", "by invitation")]
)
def test_registration_closed_or_by_invitation_refuses_the_form(app, policy, says):
    app.config["CHAT_REGISTRATION"] = policy
    client = app.test_client()
    page = client.get("/register")
    assert page.status_code == 403
    assert says in page.text
    assert "Create one" not in client.get("/login").text
    form = {"email": "x@example.com", "csrf_token": csrf_token(client.get("/login"))}
    assert client.post("/register", data=form).status_code == 403


def test_the_admin_pages_choice_of_policy_wins_over_the_configuration(app, alice):
    with app.app_context():
        assert actions.set_registration_policy("closed", alice)
        assert not actions.set_registration_policy("closed", alice)
        with pytest.raises(actions.AdminError):
            actions.set_registration_policy("sometimes", alice)
    assert app.test_client().get("/register").status_code == 403
    assert audit_actions(app) == [(alice, "set_registration", "server", None)]


def invite(app, max_uses=None, expires_in=None, rooms=()):
    with app.app_context():
        expires = utcnow() + expires_in if expires_in is not None else None
        invitation, secret = invitations.create(None, expires, max_uses, list(rooms))
        db.session.commit()
        return invitation.id, secret


def test_an_invitation_makes_accounts_in_its_rooms_until_used_up(app, alice):
    app.config["CHAT_REGISTRATION"] = "closed"  # Links work whatever the policy.
    with app.app_context():
        db.session.add(Room(key="team", title="team", kind="public"))
        db.session.commit()
    invitation_id, secret = invite(app, max_uses=1, rooms=["team", "nonexistent"])
    client = app.test_client()
    page = client.get(f"/join/{secret}")
    assert page.status_code == 200
    assert "You were invited" in page.text
    joined = submit_form(
        client,
        f"/join/{secret}",
        {"email": "new@example.com", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert joined.status_code == 302
    newcomer = user(app, "new@example.com")
    with app.app_context():
        rooms = db.session.scalars(
            select(Room.key).join(Membership).where(Membership.user_id == newcomer.id)
        )
        assert set(rooms) == {"team"}
    # Used up: the link says so, and makes nothing.
    assert app.test_client().get(f"/join/{secret}").status_code == 404
    assert app.test_client().get("/join/not-a-secret").status_code == 404
    with app.app_context():
        assert invitations.state(db.session.get(invitations.Invitation, invitation_id)) == "used up"


def test_an_invitation_used_up_between_the_form_and_the_post_makes_nothing(app):
    _id, secret = invite(app, max_uses=1)
    slow, fast = app.test_client(), app.test_client()
    slow_token_page = slow.get(f"/join/{secret}")
    assert register_with(fast, secret, "fast@example.com").status_code == 302
    late = slow.post(
        f"/join/{secret}",
        data={
            "email": "slow@example.com",
            "password": PASSWORD,
            "confirm": PASSWORD,
            "csrf_token": csrf_token(slow_token_page),
        },
    )
    assert late.status_code == 404
    with app.app_context():
        assert User.by_email("slow@example.com") is None


def register_with(client, secret, email):
    return submit_form(
        client, f"/join/{secret}", {"email": email, "password": PASSWORD, "confirm": PASSWORD}
    )


def test_expired_and_revoked_invitations_make_nothing(app):
    _id, expired = invite(app, expires_in=timedelta(seconds=-1))
    revoked_id, revoked = invite(app)
    with app.app_context():
        db.session.get(invitations.Invitation, revoked_id).revoked_at = utcnow()
        db.session.commit()
    for secret in (expired, revoked):
        assert app.test_client().get(f"/join/{secret}").status_code == 404
    with app.app_context():
        states = [invitations.state(i) for i in db.session.scalars(select(invitations.Invitation))]
    assert sorted(states) == ["expired", "revoked"]


# ---- Password reset links -------------------------------------------------------------------


def test_a_reset_link_sets_a_password_once_and_ends_every_session(app, alice, bob):
    signed_in = app.test_client()
    login(signed_in, "bob@example.com")
    with app.app_context():
        token = actions.reset_link(db.session.get(User, bob), actor_id=alice)
    reset = app.test_client()
    page = reset.get(f"/reset/{token}")
    assert page.status_code == 200
    assert "bob@example.com" in page.text
    done = submit_form(
        reset, f"/reset/{token}", {"password": "a new secret", "confirm": "a new secret"}
    )
    assert done.status_code == 302
    assert signed_in.get("/").status_code == 302  # Every session of the account ended.
    assert login(app.test_client(), "bob@example.com", "a new secret").status_code == 302
    assert app.test_client().get(f"/reset/{token}").status_code == 404  # Once.
    assert app.test_client().get("/reset/forged").status_code == 404
    assert audit_actions(app) == [(alice, "reset_link", "user", bob)]


# ---- The admin page -------------------------------------------------------------------------


def admin_client(app, user_id, email="alice@example.com"):
    make_admin(app, user_id)
    client = app.test_client()
    assert login(client, email).status_code == 302
    return client


def post_on_page(client, path, data=None):
    """POST a form of the admin page with the page's CSRF token; the page it redirects to."""
    token = csrf_token(client.get("/admin/"))
    response = client.post(path, data={**(data or {}), "csrf_token": token})
    assert response.status_code == 302, response.text
    return client.get("/admin/")


def admin_endpoints(app, user_id, room_id, invitation_id):
    """``(method, path)`` of every page and form of the admin blueprint, ids filled in."""
    values = {"user_id": user_id, "room_id": room_id, "invitation_id": invitation_id}
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("admin."):
            path = rule.rule
            for name, value in values.items():
                path = path.replace(f"<int:{name}>", str(value))
            found += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def test_only_administrators_open_the_admin_page_or_post_its_forms(app, alice, bob, make_user):
    carol = make_user("carol@example.com")[0]
    with app.app_context():
        room = Room(key="ops", title="ops", kind="public")
        db.session.add(room)
        db.session.commit()
        invitation, _ = invitations.create(alice, None, None, [])
        db.session.commit()
        ids = (carol, room.id, invitation.id)
    endpoints = admin_endpoints(app, *ids)
    assert len(endpoints) == 11  # People, rooms, registration, invitations: every one listed.
    member, outsider, gone = app.test_client(), app.test_client(), app.test_client()
    login(member, "bob@example.com")
    login(gone, "carol@example.com")
    token = csrf_token(member.get("/profile"))
    with app.app_context():
        actions.deactivate(db.session.get(User, carol), actor_id=None)
    for method, path in endpoints:
        sent = {"data": {"csrf_token": token, "confirm": "ops"}} if method == "POST" else {}
        assert member.open(path, method=method, **sent).status_code == 403, path
        for signed_out in (outsider, gone):  # A deactivated person's session has ended.
            answered = signed_out.open(path, method=method, **sent)
            assert answered.status_code in (302, 400), path  # To the login page, or no CSRF.
            if answered.status_code == 302:
                assert "/login" in answered.headers["Location"]
    with app.app_context():
        assert db.session.get(Room, ids[1]) is not None  # Nothing happened.
        assert db.session.get(Invitation, ids[2]).revoked_at is None
        assert db.session.get(User, bob).role == MEMBER
    assert "Administration" not in member.get("/").text
    admin = admin_client(app, alice)
    assert "Administration" in admin.get("/").text
    page = admin.get("/admin/")
    assert page.status_code == 200
    assert "bob@example.com" in page.text


def test_the_admin_page_deactivates_resets_and_invites(app, alice, bob):
    admin = admin_client(app, alice)
    page = post_on_page(admin, f"/admin/people/{bob}/deactivate")
    assert "bob is deactivated and signed out everywhere." in page.text
    assert user(app, "bob@example.com").deactivated_at is not None
    page = post_on_page(admin, f"/admin/people/{alice}/deactivate")
    assert "You cannot deactivate your own account." in page.text
    page = post_on_page(admin, f"/admin/people/{alice}/role", {"role": "member"})
    assert "This is the last administrator" in page.text
    post_on_page(admin, f"/admin/people/{bob}/reactivate")
    page = post_on_page(admin, f"/admin/people/{bob}/reset")
    link = re.search(r'id="new-link" class="new-link" value="([^"]+)"', page.text).group(1)
    assert "/reset/" in link
    assert "new-link" not in admin.get("/admin/").text  # Shown once.
    page = post_on_page(admin, "/admin/invitations", {"days": "2", "uses": "3"})
    link = re.search(r'id="new-link" class="new-link" value="([^"]+)"', page.text).group(1)
    assert app.test_client().get(link.removeprefix("http://localhost")).status_code == 200
    page = post_on_page(admin, "/admin/invitations", {"days": "forever"})
    assert "whole numbers" in page.text
    page = post_on_page(admin, "/admin/registration", {"policy": "invite"})
    assert "Registration is now: invite." in page.text
    assert [a[1] for a in audit_actions(app)] == [
        "set_role",
        "deactivate",
        "reactivate",
        "reset_link",
        "create_invitation",
        "set_registration",
    ]


def test_a_bot_is_never_an_administrator_nor_counted_as_one(app, alice):
    from bots import manage as bots
    from models import ensure_general

    with app.app_context():
        bot, _secrets = bots.create("Helper", ensure_general(), "", actor_id=alice)
        robot = db.session.get_one(User, bot.user_id)
        with pytest.raises(actions.AdminError) as refused:
            actions.set_role(robot, ADMIN, actor_id=None)
        assert refused.value.code == "bad_request"
        robot.role = ADMIN  # Even if a row said so (an old import, a hand edit):
        db.session.commit()
        assert not robot.is_admin
        actions.set_role(db.session.get_one(User, alice), ADMIN, actor_id=None)
        with pytest.raises(actions.AdminError):  # alice is still the last administrator.
            actions.set_role(db.session.get_one(User, alice), MEMBER, actor_id=alice)
