"""Users and messages in the database."""

from datetime import UTC

import pytest
from flask_migrate import upgrade
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from extensions import db
from models import MIGRATIONS, Message, User, messages_before, save_message, save_messages

pytestmark = pytest.mark.database  # See conftest.py: run on PostgreSQL too.


def test_user_name_is_the_part_before_the_at(app):
    assert User(email="jean.dupont@example.fr").name == "jean.dupont"


def test_password_is_hashed_and_checked(app):
    user = User(email="a@example.com")
    with app.app_context():
        user.set_password("s3cret-enough")
    assert user.password_hash.startswith("scrypt:1024:8:1$")  # The test config's cost.
    assert "s3cret-enough" not in user.password_hash
    assert user.check_password("s3cret-enough")
    assert not user.check_password("S3cret-enough")


def test_by_email_ignores_case_and_spaces(app, make_user):
    make_user("alice@example.com")
    with app.app_context():
        assert User.by_email("  ALICE@Example.com ").email == "alice@example.com"
        assert User.by_email("nobody@example.com") is None


def test_email_is_unique(app, make_user):
    make_user("alice@example.com")
    with pytest.raises(IntegrityError):
        make_user("alice@example.com")


def test_session_id_carries_the_session_version(app, make_user):
    user_id = make_user()[0]
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user.get_id() == f"{user_id}.0"
        user.session_version = 3
        assert user.get_id() == f"{user_id}.3"


def test_saved_message_round_trips(app, make_user, general):
    user_id = make_user()[0]
    with app.app_context():
        data, created = save_message(user_id, general, "bonjour", "c1")
    assert created
    assert data["user"] == "alice"
    assert data["text"] == "bonjour"
    assert data["client_id"] == "c1"
    assert data["created_at"].tzinfo == UTC


def test_same_client_id_returns_the_original(app, make_user, general):
    user_id = make_user()[0]
    with app.app_context():
        first, _ = save_message(user_id, general, "once", "c1")
        again, created = save_message(user_id, general, "something else", "c1")
        count = db.session.scalar(select(func.count()).select_from(Message))
    assert not created
    assert again == first
    assert count == 1


def test_client_ids_are_per_user(app, make_user, general):
    alice, bob = make_user("alice@example.com")[0], make_user("bob@example.com")[0]
    with app.app_context():
        assert save_message(alice, general, "a", "same")[1]
        assert save_message(bob, general, "b", "same")[1]


def test_messages_without_client_id_never_collide(app, make_user, general):
    user_id = make_user()[0]
    with app.app_context():
        assert save_message(user_id, general, "a")[1]
        assert save_message(user_id, general, "a")[1]


def test_messages_before_are_the_latest_oldest_first(app, make_user, general):
    user_id = make_user()[0]
    with app.app_context():
        for n in range(5):
            save_message(user_id, general, str(n))
        assert [m["text"] for m in messages_before(general, None, 3)] == ["2", "3", "4"]


def test_deleting_a_user_deletes_their_messages(app, make_user, general):
    user_id = make_user()[0]
    with app.app_context():
        save_message(user_id, general, "bye")
        db.session.delete(db.session.get(User, user_id))
        db.session.commit()
        assert messages_before(general, None, 10) == []


def test_message_for_unknown_user_is_refused(app, general):
    with app.app_context(), pytest.raises(IntegrityError):
        save_message(12345, general, "ghost")


def test_a_batch_is_stored_in_one_go_with_ids_in_row_order(app, make_user, general):
    alice, _ = make_user("alice@example.com")
    bob, _ = make_user("bob@example.com")
    rows = [
        (alice, general, f"m{n}", f"c{n}", "general", "alice") if n % 2 else
        (bob, general, f"m{n}", f"c{n}", "general", "bob")
        for n in range(20)
    ]  # fmt: skip
    with app.app_context():
        stored = save_messages(rows)
        assert [m["text"] for m in stored] == [f"m{n}" for n in range(20)]
        ids = [m["id"] for m in stored]
        assert ids == sorted(ids)
        assert len(set(ids)) == 20
        in_db = db.session.scalars(select(Message.text).order_by(Message.id)).all()
        assert in_db == [f"m{n}" for n in range(20)]


def test_a_batch_with_a_repeated_client_id_stores_nothing(app, make_user, general):
    alice, _ = make_user("alice@example.com")
    with app.app_context():
        save_message(alice, general, "first", "c1")
        with pytest.raises(IntegrityError):
            save_messages([(alice, general, "new", "c2", "general", "alice"),
                           (alice, general, "again", "c1", "general", "alice")])  # fmt: skip
        db.session.rollback()
        assert db.session.scalar(select(func.count(Message.id))) == 1


def test_the_messages_migration_keeps_existing_messages(app_config, make_app):
    """Upgrading a database from before edits and reactions keeps its messages, unchanged."""
    fresh = make_app(app_config)  # Without the ``app`` fixture: an empty database.
    rows = [
        "INSERT INTO users (email, password_hash, created_at, token_version, session_version)"
        " VALUES ('old@example.com', 'x', CURRENT_TIMESTAMP, 0, 0)",
        "INSERT INTO rooms (key, title, kind, created_at)"
        " VALUES ('general', 'general', 'public', CURRENT_TIMESTAMP)",
        "INSERT INTO messages (room_id, user_id, text, created_at)"
        " SELECT r.id, u.id, 'from before', CURRENT_TIMESTAMP FROM rooms r, users u",
    ]
    with fresh.app_context():
        upgrade(directory=str(MIGRATIONS), revision="13125848e59d")  # The revision before.
        with db.engine.begin() as connection:
            for row in rows:
                connection.execute(text(row))
        upgrade(directory=str(MIGRATIONS))
        (message,) = messages_before(db.session.scalar(select(Message.room_id)))
        # The search index, made and remade by later migrations, holds what was there before.
        from core import search

        user_id = message["user_id"]
        joined = "INSERT INTO memberships (room_id, user_id, last_read_id, joined_at)"
        everywhere = " SELECT id, :user, 0, CURRENT_TIMESTAMP FROM rooms"
        db.session.execute(text(joined + everywhere), {"user": user_id})
        db.session.commit()
        hits, _ = search.search(user_id, "before")
    assert [hit.message["id"] for hit in hits] == [message["id"]]
    assert message["attachments"] == []
    assert message["text"] == "from before"
    assert (message["edited_at"], message["deleted"], message["reply_to"]) == (None, False, None)
    assert (message["reactions"], message["mentions"]) == ([], {})
