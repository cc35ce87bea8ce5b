"""``flask export`` / ``flask import`` / ``flask backup``: a chat made over real sockets on SQLite,
exported, imported into PostgreSQL, and found identical, row for row."""

import io
import json
import sqlite3
import uuid

import pytest
from flask_migrate import upgrade
from PIL import Image
from sqlalchemy import func, inspect, select, update

from accounts import api_tokens
from archive.dump import tables
from bots import manage as bots
from core import search
from extensions import db
from helpers import PASSWORD, Http
from models import (
    MIGRATIONS,
    WRITE,
    LinkPreview,
    Message,
    PushSubscription,
    Room,
    User,
    as_utc,
    save_message,
)


def post(chat, text, **fields):
    """Send a message; the saved message."""
    client_id = uuid.uuid4().hex
    chat.send({"type": "message", "text": text, "client_id": client_id, **fields})
    return answer(chat, client_id)


def answer(chat, client_id):
    while (frame := chat.recv()).get("client_id") != client_id:
        pass
    assert frame["type"] in {"message", "message_changed"}, frame
    return frame


def change(chat, frame):
    """Send an edit, deletion or reaction; the ``message_changed`` that answers it."""
    client_id = uuid.uuid4().hex
    chat.send({**frame, "client_id": client_id})
    return answer(chat, client_id)


@pytest.fixture
def busy_chat(app, make_user, ws_connect, live_server):
    """Two people who chatted in every way there is: rooms, a direct conversation, replies,
    mentions, edits, deletions, reactions, read markers and a file."""
    alice_id = make_user("alice@example.com")[0]
    bob_id = make_user("bob@example.com")[0]
    alice, bob = ws_connect(alice_id), ws_connect(bob_id)
    first = post(alice, "Bonjour à tous, été comme hiver")
    post(bob, f"<@{alice_id}> salut !", reply_to=first["id"])
    change(alice, {"type": "edit", "id": first["id"], "text": "Bonjour à tous, l'été"})
    change(bob, {"type": "react", "id": first["id"], "emoji": "👍🏽"})
    gone = post(alice, "oops")
    change(alice, {"type": "delete", "id": gone["id"]})
    alice.send({"type": "create_room", "name": "Design"})
    while alice.recv()["type"] != "room":
        pass
    post(alice, "in design", room="design")
    alice.send({"type": "update_room", "room": "design", "topic": "pixels", "title": "UX"})
    alice.send({"type": "archive_room", "room": "design"})
    alice.send({"type": "create_room", "name": "Board", "private": True})
    while (private := alice.recv())["type"] != "room":
        pass
    post(alice, "behind closed doors", room=private["room"])
    alice.send({"type": "invite_link", "room": private["room"], "days": 3, "uses": 2})
    while alice.recv()["type"] != "invite_link":
        pass
    alice.send({"type": "open_dm", "user_id": bob_id})
    while (frame := alice.recv())["type"] != "room":
        pass
    post(alice, "just us", room=frame["room"])
    alice.send({"type": "read", "room": "general", "id": first["id"]})
    picture = io.BytesIO()
    Image.new("RGB", (20, 10)).save(picture, "PNG")
    upload = Http(app, live_server, alice_id).uploaded(picture.getvalue(), "plan.png")
    post(alice, "the plan", attachments=[upload["id"]])
    alice.sync()
    _reach(app, alice_id)
    return alice_id, bob_id


def _reach(app, alice_id):
    """What issue 21 added: a bot, an API token, a browser subscribed to push, a link preview."""
    with app.app_context():
        general = db.session.scalar(select(Room.id).where(Room.key == "general"))
        bots.create("Helper", general, "https://example.com/hook", actor_id=alice_id)
        api_tokens.create(db.session.get_one(User, alice_id), "script", WRITE)
        db.session.add(
            PushSubscription(
                user_id=alice_id,
                endpoint="https://push.example.com/send/abc",
                p256dh="B" + "A" * 86,
                auth="A" * 22,
                user_agent="Firefox",
            )
        )
        preview = LinkPreview(url="https://example.com/", ok=True, title="Example")
        db.session.add(preview)
        db.session.flush()
        db.session.execute(
            update(Message).where(Message.text == "the plan").values(preview_id=preview.id)
        )
        db.session.commit()


def contents(app):
    """Every exported table's rows, in key order, as plain values."""
    found = {}
    with app.app_context():
        for table in tables():
            rows = db.session.execute(select(table).order_by(*table.primary_key.columns))
            found[table.name] = [
                {k: _comparable(v) for k, v in row._mapping.items()} for row in rows
            ]
    return found


def _comparable(value):
    """Times as aware UTC (SQLite hands back naive ones)."""
    return as_utc(value) if hasattr(value, "tzinfo") else value


@pytest.mark.database
def test_sqlite_to_postgresql_loses_nothing(app, busy_chat, runner, tmp_path, postgres_url,
                                           app_config, make_app):  # fmt: skip
    alice_id, _bob_id = busy_chat
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("the source of this round trip is SQLite (it runs in the SQLite pass)")
    exported = tmp_path / "chat.jsonl"
    result = runner.invoke(args=["export", "--with-password-hashes", str(exported)])
    assert result.exit_code == 0, result.output
    before = contents(app)
    assert result.output.strip() == f"Exported {sum(len(r) for r in before.values())} rows."
    kinds = ("users", "messages", "reactions", "mentions", "message_changes", "attachments",
             "invitations", "bots", "api_tokens", "push_subscriptions",
             "link_previews")  # fmt: skip
    rooms = {row["title"]: row for row in before["rooms"]}
    assert (rooms["UX"]["topic"], rooms["Board"]["kind"]) == ("pixels", "private")
    assert rooms["UX"]["archived_at"] is not None
    assert all(before[name] for name in (*kinds, "memberships"))

    target = make_app({**app_config, "DATABASE_URL": postgres_url})
    with target.app_context():
        upgrade(directory=str(MIGRATIONS))  # The schema, empty: then the import.
    imported = target.test_cli_runner().invoke(args=["import", str(exported)])
    assert imported.exit_code == 0, imported.output
    assert contents(target) == before

    with target.app_context():
        # Passwords kept, the search index built, and new rows numbered after the old ones.
        assert db.session.get(User, alice_id).check_password(PASSWORD)
        hits, _ = search.search(alice_id, "ete")
        assert [hit.message["text"] for hit in hits] == ["Bonjour à tous, l'été"]
        newest = db.session.scalar(select(func.max(Message.id)))
        general = db.session.scalar(select(Message.room_id).where(Message.id == newest))
        data, _created = save_message(alice_id, general, "after the move")
        assert data["id"] == newest + 1


def test_without_hashes_nobody_keeps_a_password(app, busy_chat, runner, tmp_path, make_app,
                                                app_config):  # fmt: skip
    alice_id, _ = busy_chat
    exported = tmp_path / "chat.jsonl"
    assert runner.invoke(args=["export", str(exported)]).exit_code == 0
    lines = exported.read_text().splitlines()
    header = json.loads(lines[0])
    assert (header["format"], header["version"], header["password_hashes"]) == (
        "chat-export", 1, False,
    )  # fmt: skip
    assert not any('"password_hash": "scrypt' in line for line in lines)
    assert not any('"table": "api_tokens"' in line for line in lines)  # Credentials too.
    assert any('"table": "bots"' in line for line in lines)
    target = make_app({**app_config, "DATABASE_URL": f"sqlite:///{tmp_path / 'copy.db'}"})
    with target.app_context():
        upgrade(directory=str(MIGRATIONS))
    assert target.test_cli_runner().invoke(args=["import", str(exported)]).exit_code == 0
    with target.app_context():
        assert not db.session.get(User, alice_id).check_password(PASSWORD)
        assert not db.session.get(User, alice_id).check_password("!")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("", "not a chat export"),
        ('{"format": "chat-export", "version": 99}\n', "export version 99"),
        ('{"format": "chat-export", "version": 1}\nnot json\n', "line 2: not JSON"),
        ('{"format": "chat-export", "version": 1}\n{"table": "secrets", "row": {}}\n',
         "line 2: not a row of a known table"),
        ('{"format": "chat-export", "version": 1}\n'
         '{"table": "rooms", "row": {"id": 1, "key": "a", "title": "a", "kind": "public",'
         ' "created_at": "2026-01-01T00:00:00+00:00"}}\n'
         '{"table": "users", "row": {"id": 1}}\n', "table users after rooms"),
    ],
    ids=["empty", "version", "garbage", "unknown-table", "out-of-order"],
)  # fmt: skip
def test_a_bad_file_imports_nothing(app_config, make_app, tmp_path, content, error):
    target = make_app({**app_config, "DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"})
    with target.app_context():
        upgrade(directory=str(MIGRATIONS))
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    result = target.test_cli_runner().invoke(args=["import", str(path)])
    assert result.exit_code == 1
    assert f"Nothing was imported: {error}" in result.output
    with target.app_context():
        for table in tables():
            assert db.session.scalar(select(func.count()).select_from(table)) == 0


def test_import_refuses_a_database_with_rows(app, busy_chat, runner, tmp_path):
    exported = tmp_path / "chat.jsonl"
    assert runner.invoke(args=["export", str(exported)]).exit_code == 0
    result = runner.invoke(args=["import", str(exported)])
    assert result.exit_code == 1
    assert "the database is not empty (table users)" in result.output


def test_backup_copies_a_live_sqlite_database_and_its_files(app, busy_chat, runner, tmp_path):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        assert "pg_dump" in runner.invoke(args=["backup", str(tmp_path / "b")]).output
        return
    result = runner.invoke(args=["backup", str(tmp_path / "backup")])
    assert result.exit_code == 0, result.output
    assert "and 2 uploaded files" in result.output  # The image and its thumbnail.
    copy = sqlite3.connect(tmp_path / "backup" / "chat.db")
    try:
        (count,) = copy.execute("SELECT count(*) FROM messages").fetchone()
        (found,) = copy.execute(
            "SELECT count(*) FROM messages_search WHERE messages_search MATCH 'hiver'"
        ).fetchone()
    finally:
        copy.close()
    with app.app_context():
        assert count == db.session.scalar(select(func.count(Message.id)))
        assert inspect(db.engine).has_table("attachments")
    assert found == 0  # Edited away: the copy's index is the live one's.
