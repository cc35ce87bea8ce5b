"""``flask export FILE``, ``flask import FILE`` and ``flask backup FOLDER``."""

import shutil
import sqlite3
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from archive.dump import ArchiveError, export, load
from extensions import db


@click.command("export")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--with-password-hashes",
    is_flag=True,
    help="Keep password hashes, so that people keep their passwords (to move servers).",
)
@with_appcontext
def export_command(path: str, with_password_hashes: bool) -> None:
    """Write the whole chat to PATH as JSON Lines ("-": standard output)."""
    with db.engine.connect() as connection, click.open_file(path, "w", encoding="utf-8") as out:
        # One transaction, so one snapshot of every table. Python's sqlite3 begins none for a
        # SELECT: ask for it.
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN")
        count = export(connection, out, with_password_hashes)
    click.echo(f"Exported {count} rows.", err=path == "-")


@click.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@with_appcontext
def import_command(path: str) -> None:
    """Load an export into this chat's database, which must be empty (run init-db first)."""
    try:
        with click.open_file(path, encoding="utf-8") as lines, db.engine.begin() as connection:
            count = load(connection, iter(lines))
    except ArchiveError as error:
        raise click.ClickException(f"Nothing was imported: {error}") from None
    click.echo(f"Imported {count} rows.")


@click.command("backup")
@click.argument("folder", type=click.Path(file_okay=False))
@with_appcontext
def backup_command(folder: str) -> None:
    """Copy the live SQLite database (its online backup API) and the uploads folder to FOLDER.

    On PostgreSQL, use pg_dump (docs/deploy.md); with S3, the bucket's own versioning or copies.
    """
    engine = db.engine
    if engine.dialect.name != "sqlite":
        raise click.ClickException(
            "This database is PostgreSQL: back it up with pg_dump (docs/deploy.md, Backups)."
        )
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    database = engine.url.database
    if not database:
        raise click.ClickException("An in-memory database cannot be backed up.")
    destination = target / "chat.db"
    # The online backup API copies a consistent database while the chat keeps writing.
    source, copy = sqlite3.connect(database), sqlite3.connect(destination)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    uploads = current_app.config["CHAT_UPLOAD_DIR"]
    files = 0
    if not current_app.config["CHAT_S3_BUCKET"] and uploads and Path(uploads).is_dir():
        # After the database: every file a copied row names was stored before its row (one
        # deleted between the two copies may be missing; run it again for a perfect pair).
        shutil.copytree(uploads, target / "uploads", dirs_exist_ok=True)
        files = sum(1 for item in (target / "uploads").rglob("*") if item.is_file())
    click.echo(f"Backed up the database to {destination} and {files} uploaded files.")
