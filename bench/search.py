"""Search latency over a large chat: ``python -m bench.search`` (1,000,000 messages, minutes).

    python -m bench.search                     # SQLite, 1,000,000 messages
    python -m bench.search --messages 20000    # smaller
    BENCH_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5432/test python -m bench.search
    python -m bench.search --keep              # keep the data set; the next run reuses it

The data set is generated, the same every time (a seeded random generator): 100 people in 50
rooms, each person in 10 of them; each message 4 to 20 words drawn from 5,000 made-up words with
Zipf-like frequencies (a few very common, most rare), one in twenty with a French accented word.
Messages go in through the same path as the chat's (``models.save_messages``: the triggers or
the generated column index them), in batches, then the planner's statistics are refreshed
(``VACUUM ANALYZE`` on PostgreSQL, ``ANALYZE`` on SQLite), as a deployment's autovacuum would
after so many writes: without them PostgreSQL plans a common word as if it were rare. Then each
query of ``QUERIES`` runs ``--rounds``
times through ``GET /api/search`` (Flask's test client: the server's work, no network), as one
member, and the latency's p50 and p95 are reported, beside the reference of the same run: the
latest page of one of that member's rooms (``messages_before``, 20 messages, as a search
answers), the floor any search pays to describe what it found.
"""

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import DBAPIError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

PEOPLE, ROOMS, ROOMS_EACH, VOCABULARY = 100, 50, 10, 5_000
FRENCH = ["été", "déploiement", "réunion", "électricité", "fenêtre", "garçon", "problème"]
QUERIES = {
    "common word": "w1",
    "rare word": "w4321",
    "two words": "w3 w17",
    "phrase": '"w1 w2"',
    "prefix": "w12*",
    "accents": "deploiement",
    "author": "w5 from:person7",
    "room": "w5 in:{room}",  # One of the member's rooms.
    "no match": "zzzz",
}


def words():
    """A made-up vocabulary with Zipf-like frequencies: w1 is the most common."""
    weights = [1 / rank for rank in range(1, VOCABULARY + 1)]
    return [f"w{rank}" for rank in range(1, VOCABULARY + 1)], weights


def generate(app, total, batch=5_000):
    """Fill the app's database with ``total`` messages; return a member's user id."""
    from extensions import db
    from models import Membership, Room, User, save_messages

    rng = random.Random(42)  # noqa: S311 - a data set, the same every run, not a secret
    vocabulary, weights = words()
    with app.app_context():
        no_login = "!"  # No password hash matches it: nobody logs in as them.
        users = [
            User(email=f"person{n}@example.com", password_hash=no_login) for n in range(PEOPLE)
        ]
        rooms = [Room(key=f"room{n}", title=f"room{n}", kind="public") for n in range(ROOMS)]
        db.session.add_all(users + rooms)
        db.session.flush()
        members = {}
        for user in users:
            mine = rng.sample(rooms, ROOMS_EACH)
            members[user.id] = [room.id for room in mine]
            db.session.execute(
                insert(Membership), [{"room_id": r.id, "user_id": user.id} for r in mine]
            )
        db.session.commit()
        people = [user.id for user in users]
        started = time.monotonic()
        for start in range(0, total, batch):
            rows = []
            for _ in range(min(batch, total - start)):
                author = rng.choice(people)
                line = rng.choices(vocabulary, weights, k=rng.randint(4, 20))
                if rng.random() < 0.05:
                    line.append(rng.choice(FRENCH).capitalize())
                rows.append((author, rng.choice(members[author]), " ".join(line), None, "r", "u"))
            save_messages(rows)
        seconds = time.monotonic() - started
        return people[0], seconds


def timed(call, rounds):
    """Milliseconds of each of ``rounds`` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times):
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 2),
    }


def measure(app, user_id, rounds):
    """p50 and p95 of each query, and of the reference (a history page), in milliseconds."""
    from accounts.tokens import issue_token
    from extensions import db
    from models import Membership, Room, User, messages_before

    with app.app_context():
        token = issue_token(db.session.get_one(User, user_id))
        mine = select(Membership.room_id).where(Membership.user_id == user_id).limit(1)
        room_id = db.session.scalar(mine)
        room_name = db.session.get_one(Room, room_id).key
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    results = {}

    def reference():
        with app.app_context():
            messages_before(room_id, None, 20)

    results["reference: latest page"] = summary(timed(reference, rounds))
    for name, pattern in QUERIES.items():
        query = pattern.format(room=room_name)

        def run(query=query):
            response = client.get("/api/search", query_string={"q": query}, headers=headers)
            assert response.status_code == 200, response.get_json()

        results[name] = summary(timed(run, rounds))
        response = client.get("/api/search", query_string={"q": query}, headers=headers)
        results[name]["results"] = len(response.get_json()["results"])
    return results


def analyze(app):
    """Refresh the planner's statistics, as a deployment's autovacuum (PostgreSQL) or the app's
    ``PRAGMA optimize`` would after so many writes: a fresh bulk load has none."""
    from extensions import db

    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        else:
            db.session.execute(text("ANALYZE"))
            db.session.commit()


def schema_matches(connection):
    """Whether every table and column of the models is in the kept data set."""
    from sqlalchemy import inspect

    from extensions import db

    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    for table in db.metadata.sorted_tables:
        if table.name not in tables:
            return False
        present = {column["name"] for column in inspector.get_columns(table.name)}
        if not set(table.columns.keys()) <= present:
            return False
    return True


def kept_member(url, total):
    """The member's id if ``url`` holds a ``--keep``-ed data set of ``total`` messages, else
    None (none yet, or a run stopped while loading)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if connection.scalar(text("SELECT count(*) FROM messages")) != total:
                return None
            if not schema_matches(connection):
                return None  # Made before a migration: load again.
            member = "SELECT id FROM users WHERE email = 'person0@example.com'"
            return connection.scalar(text(member))
    except DBAPIError:
        return None
    finally:
        engine.dispose()


def main():
    parser = argparse.ArgumentParser(
        prog="python -m bench.search", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "search")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated data set (SQLite: bench_search_<messages>.db in the temporary"
        " folder; PostgreSQL: the schema bench_search_<messages>) and reuse it on the next run"
        " of the same size: to measure a change of the queries without loading again",
    )
    options = parser.parse_args()

    from app import create_app
    from extensions import db

    postgres = os.environ.get("BENCH_POSTGRES")
    kept = f"bench_search_{options.messages}"
    with tempfile.TemporaryDirectory() as folder:
        schema = kept if options.keep else f"bench_{uuid.uuid4().hex[:8]}"
        if postgres:
            admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
            url = f"{postgres}?options=-csearch_path%3D{schema}"
        elif options.keep:
            url = f"sqlite:///{Path(tempfile.gettempdir()) / kept}.db"
        else:
            url = f"sqlite:///{folder}/bench.db"
        user_id = kept_member(url, options.messages) if options.keep else None
        if user_id is None and postgres:
            with admin.connect() as connection:
                connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
                connection.execute(text(f"CREATE SCHEMA {schema}"))
        elif user_id is None:
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        app = create_app({"SECRET_KEY": "bench" * 8, "DATABASE_URL": url, "TESTING": True})
        load_seconds = None
        try:
            if user_id is None:
                with app.app_context():
                    db.create_all()
                user_id, load_seconds = generate(app, options.messages)
                analyze(app)
            results = measure(app, user_id, options.rounds)
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
            if postgres:
                if not options.keep:
                    with admin.connect() as connection:
                        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
                admin.dispose()
    engine = "postgresql" if postgres else "sqlite"
    report = {
        "engine": engine,
        "messages": options.messages,
        "load_seconds": round(load_seconds, 1) if load_seconds is not None else None,
        "queries": results,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / f"{engine}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    floor = results["reference: latest page"]["p95_ms"]
    loaded = f"loaded in {load_seconds:.0f} s" if load_seconds is not None else "kept"
    print(f"{engine}, {options.messages:,} messages ({loaded})")
    for name, row in results.items():
        ratio = row["p95_ms"] / floor if floor else 0
        found = f"  {row['results']} results" if "results" in row else ""
        times = f"p50 {row['p50_ms']:7.2f} ms  p95 {row['p95_ms']:7.2f} ms"
        print(f"  {name:24} {times}  ({ratio:.1f}x the reference){found}")


if __name__ == "__main__":
    main()
