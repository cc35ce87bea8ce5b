"""full-text search of messages: FTS5 on SQLite, a tsvector with a GIN index on PostgreSQL

Revision ID: 7c1d2e3f4a5b
Revises: 3f9265270a84
Create Date: 2026-12-03 15:20:00

Neither is in the models' metadata (``migrations/env.py`` leaves them out of autogenerate): an
FTS5 table and a generated column are what the database keeps for itself. On SQLite, triggers
keep the index in the transaction of every insert, edit and deletion. A later batch migration of
``messages`` on SQLite (Alembic copies the table) drops these triggers: it must create them again
(``SQLITE_TRIGGERS``). ``models.SEARCH_DDL_*`` is the same, for ``create_all``.
"""

import sqlalchemy as sa
from alembic import op

revision = "7c1d2e3f4a5b"
down_revision = "3f9265270a84"
branch_labels = None
depends_on = None

# unicode61 with remove_diacritics 2: case and accents are ignored ("ete" finds "été"), in
# every language, with no stemming (no English rules forced on French).
SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE messages_search USING fts5("
    "text, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
)
SQLITE_TRIGGERS = [
    "CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN"
    " INSERT INTO messages_search(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN"
    " INSERT INTO messages_search(messages_search, rowid, text)"
    " VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER messages_search_update AFTER UPDATE OF text ON messages BEGIN"
    " INSERT INTO messages_search(messages_search, rowid, text)"
    " VALUES ('delete', old.id, old.text);"
    " INSERT INTO messages_search(rowid, text) VALUES (new.id, new.text); END",
]
# unaccent is a trusted extension (PostgreSQL 13+): the database's owner may create it. Its
# function is only STABLE (its dictionary could change), so a generated column needs it wrapped
# as IMMUTABLE, with the extension's schema spelled out, as PostgreSQL's documentation suggests.
POSTGRES = [
    """DO $$
DECLARE home text;
BEGIN
  CREATE EXTENSION IF NOT EXISTS unaccent;
  SELECT quote_ident(n.nspname) INTO home FROM pg_extension e
    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'unaccent';
  EXECUTE format(
    'CREATE OR REPLACE FUNCTION chat_unaccent(text) RETURNS text'
    ' LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT RETURN %s.unaccent(%L::regdictionary, $1)',
    home, home || '.unaccent');
END $$""",
    "ALTER TABLE messages ADD COLUMN search tsvector"
    " GENERATED ALWAYS AS (to_tsvector('simple', chat_unaccent(text))) STORED",
    "CREATE INDEX ix_messages_search ON messages USING gin (search)",
]


def upgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(SQLITE_TABLE)
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)
        op.execute("INSERT INTO messages_search(messages_search) VALUES ('rebuild')")
    elif dialect == "postgresql":
        for statement in POSTGRES:
            op.execute(sa.text(statement))


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS messages_search_{trigger}")
        op.execute("DROP TABLE IF EXISTS messages_search")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_messages_search")
        op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search")
        op.execute("DROP FUNCTION IF EXISTS chat_unaccent(text)")
