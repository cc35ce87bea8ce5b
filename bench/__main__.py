"""Load benchmark: the chat under gunicorn against a minimal asyncio ``websockets`` server.

    python -m bench                 # every scenario, full size (minutes)
    python -m bench --smoke         # every scenario, tiny (seconds; what CI runs, no thresholds)
    python -m bench --only burst    # one scenario
    python -m bench --no-reference  # the chat alone
    python -m bench --only burst --repeat 5   # five rounds each, medians reported
    python -m bench --servers chat,reference,socketio_threading,socketio_gevent
    python -m bench --only storm_5000 --pin 0:1   # server on CPU 0, clients on CPU 1

``--servers`` picks among chat, reference (bench/reference_server.py) and Flask-SocketIO
(bench/socketio_server.py) in its threading mode (gunicorn gthread, a thread per socket) and its
gevent one; the load generator speaks Socket.IO to those (bench/engineio.py). ``--pin
SERVER:CLIENT`` takes two CPU lists (``0:1``, ``0,1:1``): the server processes (gunicorn's
workers too) and the client processes are held to them; the default pins nothing.

Connection scenarios: ``storm_1000``, ``storm_5000`` and ``storm_5000_2_workers`` (two workers
and Redis) restart the server under connected clients, which all reconnect at once as the page
does, with a fresh token and ``resume=1`` with their marks (the references cannot resume: their
clients just reconnect); ``storm_5000_plain`` opens 5,000 sockets at once on a fresh server;
``admit_2000`` opens 2,000, 50 at a time.

The servers run one after the other in one invocation, on 127.0.0.1 only, each scenario bounded
in clients, messages and seconds. Results go to bench/results/latest.json and latest.md (and a
plot with --plot), with the servers and the pinning in their header. Numbers are from this
machine; compare ratios, not absolutes.
"""

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import multiprocessing
import os
import queue
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.request import Request, urlopen

from picows import WSError

from bench.load import client_process, restart_process, send_prior, storm_process

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PASSWORD = "bench password 1"  # noqa: S105 - a throwaway account on a throwaway database

# name: (clients, senders, messages per second per sender, seconds). "burst" is the issue's: 10
# senders x 200 messages a second to 50 clients (100,000 deliveries a second offered: about all
# that the clients and a server can do between them on this 2-core machine); "burst_quarter" a
# quarter of it, and "slow_consumer" is burst_quarter plus a client that never reads, so its p99
# compares with burst_quarter's. "persist" offers 2,500 messages a second to few readers, and
# "persist_5000" twice that: what the write path stores and broadcasts when fan-out is not the
# limit. Storms open every socket at once (see run_storm).
FULL = {
    "burst": (50, 10, 200, 10),
    "persist": (10, 10, 250, 10),
    "persist_5000": (10, 10, 500, 10),
    "burst_quarter": (50, 10, 50, 10),
    "slow_consumer": (50, 10, 50, 10),
    "fanout_1000": (1000, 1, 10, 10),
    "idle_2000": (2000, 0, 0, 5),
    # 5,000 sockets held open on one worker, connected 100 at a time (storm_5000 opens them all
    # at once): do they all get in and stay, and what does each cost?
    "idle_5000": (5000, 0, 0, 5),
    # The page after a restart: every client connected, then the server restarts and they all
    # reconnect at once with a fresh token and their marks (run_restart_storm). "_plain": every
    # socket opened at once on a fresh server (run_storm); "admit": 50 at a time.
    "storm_1000": (1000, 0, 0, 0),
    "storm_5000": (5000, 0, 0, 0),
    "storm_5000_plain": (5000, 0, 0, 0),
    "storm_5000_2_workers": (5000, 0, 0, 0),
    "admit_2000": (2000, 0, 0, 0),
    # Scaling with the Redis backplane: a fan-out heavier than one worker's share (5 senders x 30
    # messages a second to 1,000 clients: 150,000 deliveries a second offered; one worker keeps
    # up with 100,000 since round 6), on 1 worker and on 2.
    "scale_1_worker": (1000, 5, 30, 10),
    "scale_2_workers": (1000, 5, 30, 10),
}
SMOKE = {
    "burst": (5, 2, 20, 2),
    "persist": (3, 2, 10, 2),
    "persist_5000": (3, 2, 20, 2),
    "burst_quarter": (5, 2, 5, 2),
    "slow_consumer": (5, 2, 20, 2),
    "fanout_1000": (20, 1, 5, 2),
    "idle_2000": (20, 0, 0, 1),
    "idle_5000": (30, 0, 0, 1),
    "storm_1000": (20, 0, 0, 0),
    "storm_5000": (30, 0, 0, 0),
    "storm_5000_plain": (30, 0, 0, 0),
    "storm_5000_2_workers": (30, 0, 0, 0),
    "admit_2000": (40, 0, 0, 0),
    "scale_1_worker": (20, 2, 5, 2),
    "scale_2_workers": (20, 2, 5, 2),
}
SERVER_OPTIONS = {
    "scale_1_worker": {"workers": 1, "redis": True},
    "scale_2_workers": {"workers": 2, "redis": True},
    "storm_5000_2_workers": {"workers": 2, "redis": True},
}
# How each connection scenario runs (the rest are load scenarios, run_scenario).
STORMS = {
    "storm_1000": "restart",
    "storm_5000": "restart",
    "storm_5000_plain": "storm",
    "storm_5000_2_workers": "restart",
    "admit_2000": "admit",
}
# Messages sent before a restart storm's restart; every client has them in its marks.
PRIOR = 10
ADMIT_BATCH = 50  # Sockets connecting at a time in admit_*, over all client processes.
FANOUT_CURVE = (50, 200, 500, 1000)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited while starting")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the server did not start")


def proc_stats(pids):
    """RSS in bytes and CPU seconds (user + system) summed over ``pids``."""
    rss = cpu = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        vm_rss = [line for line in status.splitlines() if line.startswith("VmRSS")]
        if not vm_rss:
            continue  # A zombie: gunicorn has yet to reap a worker that exited.
        rss += int(vm_rss[0].split()[1]) * 1024
        cpu += (int(stat[11]) + int(stat[12])) / tick
    return rss, cpu


def children(pid):
    """The process and its direct children (gunicorn's arbiter and worker)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_settled(server, timeout=30):
    """Return once the server's processes stop burning CPU: gunicorn listens before its workers
    have loaded the app, and a restart storm must not time the app's imports."""
    deadline = time.monotonic() + timeout
    _, before = proc_stats(server.pids())
    while time.monotonic() < deadline:
        time.sleep(0.25)
        _, now = proc_stats(server.pids())
        if now - before < 0.02 and len(server.pids()) > server.workers:
            return
        before = now


def start(command, port, cpus, **popen):
    """Start a server process, on ``cpus`` if given (its children inherit them), and wait until
    it listens on ``port``."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        **popen,
    )
    wait_for_port(port, process)
    return process


def stop(process):
    """Terminate a server (gunicorn closes its sockets gracefully), killing it and its workers
    if it lingers: an orphaned worker would hold the port, and the sockets, past a restart."""
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        for pid in reversed(children(process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(5)


class ChatServer:
    """The chat under gunicorn (gthread), on a throwaway database.

    SQLite in a temporary folder, or with ``BENCH_POSTGRES`` (a PostgreSQL URL) a schema of its
    own there, dropped afterwards. With ``redis``, the Redis backplane (``BENCH_REDIS``, default
    database 14 of the local Redis, under a prefix of its own) joins ``workers`` workers.
    """

    name = "chat"
    codec = "json"
    resumes = True

    def __init__(self, users, workers=1, redis=False, cpus=None):
        self.port, self.workers, self.cpus = free_port(), workers, cpus
        self.tmp = tempfile.TemporaryDirectory()
        self.schema = None
        database = f"sqlite:///{self.tmp.name}/bench.db"
        if os.environ.get("BENCH_POSTGRES"):
            self.schema = f"bench_{os.getpid()}_{self.port}"
            self._postgres(f'CREATE SCHEMA "{self.schema}"')
            database = f"{os.environ['BENCH_POSTGRES']}?options=-csearch_path%3D{self.schema}"
        self.env = {
            **os.environ,
            "SECRET_KEY": "bench-" + "k" * 40,
            "DATABASE_URL": database,
            "CHAT_LOG_LEVEL": "WARNING",
            # The benchmark measures chat, not password hashing or flood control.
            "CHAT_PASSWORD_HASH": "scrypt:1024:8:1",
            "CHAT_MESSAGE_BURST": "1000000",
            "CHAT_FRAME_BURST": "1000000",
            "CHAT_MAX_SOCKETS_PER_USER": "100000",
            "CHAT_LOGIN_LIMIT_PER_IP": "100000 per minute",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(workers),
        }
        if redis:
            self.env["REDIS_URL"] = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
            self.env["CHAT_REDIS_PREFIX"] = f"bench-{os.getpid()}-{self.port}"
        self._create_users(users)
        self.process = self._start()
        self.tokens = self._log_in(users)
        self.database = database

    def _start(self):
        # No control socket: gunicorn's default path is one per user, shared by every run.
        command = [sys.executable, "-m", "gunicorn", "--no-control-socket", "app:create_app()"]
        return start(command, self.port, self.cpus, cwd=ROOT, env=self.env)

    def restart(self):
        """Stop gunicorn and start it again: the same port, database, secret and backplane."""
        stop(self.process)
        self.process = self._start()
        wait_settled(self)

    def fresh_urls(self, count):
        """Newly issued tokens (POST /api/token, as the page fetches before it reconnects) with
        ``resume=1``. Tokens outlive a restart (the same SECRET_KEY), so they are issued before
        it, which keeps logging in out of the timed reconnect."""
        tokens = self._log_in(count)
        return [f"ws://127.0.0.1:{self.port}/ws?token={token}&resume=1" for token in tokens]

    def stored(self):
        """How many messages the database holds: every one sent, if none was lost."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            self.database.replace("postgresql:", "postgresql+psycopg:")
        )
        try:
            with engine.connect() as connection:
                return connection.execute(sqlalchemy.text("SELECT count(*) FROM messages")).scalar()
        finally:
            engine.dispose()

    def _create_users(self, count):
        subprocess.run(
            [sys.executable, "-c", _CREATE_USERS, str(count)], cwd=ROOT, env=self.env, check=True
        )

    def _log_in(self, count):
        """One token per user, through POST /api/token, as a script would."""

        def token(n):
            body = json.dumps({"email": f"user{n}@bench.example", "password": PASSWORD}).encode()
            request = Request(
                f"http://127.0.0.1:{self.port}/api/token",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urlopen(request, timeout=30) as response:  # noqa: S310 - our own server
                return json.load(response)["token"]

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(token, range(count)))

    def url(self, n):
        return f"ws://127.0.0.1:{self.port}/ws?token={self.tokens[n]}"

    def pids(self):
        return children(self.process.pid)

    def close(self):
        stop(self.process)
        self.tmp.cleanup()
        if "REDIS_URL" in self.env:
            self._forget_redis_keys()
        if self.schema:
            self._postgres(f'DROP SCHEMA "{self.schema}" CASCADE')

    def _forget_redis_keys(self):
        """Delete the backplane's keys (presence, heartbeats) left under this run's prefix."""
        import redis

        client = redis.Redis.from_url(self.env["REDIS_URL"])
        keys = list(client.scan_iter(f"{self.env['CHAT_REDIS_PREFIX']}:*"))
        if keys:
            client.delete(*keys)

    def _postgres(self, statement):
        import psycopg

        url = os.environ["BENCH_POSTGRES"].replace("+psycopg", "")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(statement)


_CREATE_USERS = """
import sys
from app import create_app
from extensions import db
from models import User, ensure_general
app = create_app()
with app.app_context():
    db.create_all()
    ensure_general()
    for n in range(int(sys.argv[1])):
        user = User(email=f"user{n}@bench.example")
        user.set_password("bench password 1")
        db.session.add(user)
    db.session.commit()
"""


class ReferenceServer:
    """bench/reference_server.py: asyncio, no auth, no database, no resume (after a restart its
    clients just reconnect)."""

    name = "reference"
    codec = "json"
    resumes = False
    workers = 0  # The one process serves.

    def __init__(self, users, cpus=None):
        self.port, self.cpus = free_port(), cpus
        self.process = self._start()

    def _start(self):
        command = [sys.executable, "-m", "bench.reference_server", str(self.port)]
        return start(command, self.port, self.cpus, cwd=ROOT)

    def restart(self):
        """Stop the server and start it again on the same port."""
        stop(self.process)
        self.process = self._start()
        wait_settled(self)

    def url(self, _n):
        return f"ws://127.0.0.1:{self.port}/ws"

    def fresh_urls(self, count):
        """The same address: there are no tokens."""
        return [self.url(n) for n in range(count)]

    def stored(self):
        """Nothing: the reference stores nothing."""
        return None

    def pids(self):
        return [self.process.pid]

    def close(self):
        stop(self.process)


class SocketIOServer(ReferenceServer):
    """bench/socketio_server.py under gunicorn, one worker, in Flask-SocketIO's ``threading``
    mode (gthread, a thread per socket) or its ``gevent`` one, as its deployment docs run them;
    Socket.IO over WebSocket only. No resume either."""

    codec = "socketio"
    workers = 1

    def __init__(self, users, mode, cpus=None):
        self.name, self.mode = f"socketio_{mode}", mode
        # Every socket holds a thread (or a greenlet): room for all, and gunicorn's connection
        # cap (worker_connections, 1,000 by default, in both worker classes) above them.
        self.slots = max(1000, users + 100)
        # A folder of its own to start in: gunicorn would read the chat's gunicorn.conf.py.
        self.tmp = tempfile.TemporaryDirectory()
        super().__init__(users, cpus)

    def _start(self):
        worker = ["--threads", str(self.slots)] if self.mode == "threading" else ["-k", "gevent"]
        # A worker waits for its sockets' handlers to return before it exits, and a WebSocket's
        # returns only when its client leaves: a restart would wait out the 30 s default.
        worker += ["--graceful-timeout", "3"]
        command = [sys.executable, "-m", "gunicorn", "--no-control-socket", "-w", "1", *worker,
                   "--worker-connections", str(self.slots), "-b", f"127.0.0.1:{self.port}",
                   "bench.socketio_server:create_app()"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_SOCKETIO_MODE": self.mode}
        return start(command, self.port, self.cpus, cwd=self.tmp.name, env=env)

    def url(self, _n):
        return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"

    def pids(self):
        return children(self.process.pid)

    def close(self):
        stop(self.process)
        self.tmp.cleanup()


SERVERS = {
    "chat": ChatServer,
    "reference": ReferenceServer,
    "socketio_threading": functools.partial(SocketIOServer, mode="threading"),
    "socketio_gevent": functools.partial(SocketIOServer, mode="gevent"),
}


def run_scenario(server, name, clients_n, senders, rate, seconds, procs=1, cpus=None):
    """Run one scenario against ``server`` with ``procs`` client processes; its measurements.

    The clients (and the senders among them) are dealt round-robin to the processes, which open
    their sockets, wait for each other, then send and read. A client process spends about 10 µs
    of CPU per frame it reads (the burst: 9 to 10 s for 1,000,000), so one tops out near 100,000
    frames a second if it has a core to itself; here two share the cores with the server.
    """
    urls = [server.url(n) for n in range(clients_n)]
    slow_url = server.url(clients_n) if name == "slow_consumer" else None
    shards = [list(range(p, clients_n, procs)) for p in range(procs)]
    context = multiprocessing.get_context("spawn")  # No inherited event loop or sockets.
    barrier, results = context.Barrier(procs + 1), context.Queue()
    rss_before, _ = proc_stats(server.pids())
    workers = []
    for p, shard in enumerate(shards):
        job = (
            [urls[n] for n in shard],
            server.codec,
            [i for i, n in enumerate(shard) if n < senders],
            rate,
            seconds,
            slow_url if p == 0 else None,
            cpus,
        )
        workers.append(context.Process(target=client_process, args=(job, barrier, results)))
        workers[-1].start()
    try:
        barrier.wait(timeout=180)  # Every client connected and greeted.
        time.sleep(1)  # Let the greetings' presence batches settle before measuring.
        rss_connected, cpu_before = proc_stats(server.pids())
        barrier.wait(timeout=30)  # Go.
        outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    except (threading.BrokenBarrierError, queue.Empty) as error:
        raise TimeoutError(f"the clients did not finish: {type(error).__name__}") from None
    finally:
        _reap(workers)
    _, cpu_after = proc_stats(server.pids())
    failures = [outcome for outcome in outcomes if isinstance(outcome, str)]
    if failures:
        raise TimeoutError(failures[0])
    sent = sum(outcome["sent"] for outcome in outcomes)
    latencies = sorted(ms for outcome in outcomes for ms in outcome["latencies"])
    started = min(outcome["started"] for outcome in outcomes)
    last = max(outcome["last"] for outcome in outcomes)
    elapsed = max(last - started, 1e-9)  # Until the last delivery, not the last send.
    expected = sent * clients_n
    return {
        "clients": clients_n,
        "senders": senders,
        "rate": rate,
        "sent": sent,
        "deliveries": len(latencies),
        "deliveries_per_s": round(len(latencies) / elapsed, 1) if senders else None,
        # Messages stored and broadcast a second: deliveries over readers, each gets every one.
        "messages_per_s": round(len(latencies) / elapsed / clients_n) if senders else None,
        "delivery_ratio": round(len(latencies) / expected, 4) if expected else None,
        "p50_ms": _round(quantile(latencies, 0.50)),
        "p95_ms": _round(quantile(latencies, 0.95)),
        "p99_ms": _round(quantile(latencies, 0.99)),
        "max_ms": _round(latencies[-1] if latencies else None),
        "mean_ms": _round(statistics.fmean(latencies) if latencies else None),
        "rss_per_connection_kb": round((rss_connected - rss_before) / clients_n / 1024, 1),
        "server_cpu_s": round(cpu_after - cpu_before, 2),
        # The load generator's own CPU over the same span: it shares the machine's two cores.
        "client_cpu_s": round(sum(outcome["cpu_s"] for outcome in outcomes), 2),
        # Clients the server hung up on before the end (the never-reading one is not counted).
        "dropped": sum(outcome["dropped"] for outcome in outcomes),
    }


def run_storm(server, clients_n, procs, cpus=None, batch=None):
    """Every client connects at once (one burst per client process), or ``batch`` at a time: are
    all admitted, how long until the last is greeted, and how many frames (the chat's presence)
    follow the greetings.

    A naive chat announces each arrival to everyone there: n²/2 frames, 500,000 for 1,000.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    _, cpu_before = proc_stats(server.pids())
    shards = [[server.url(n) for n in range(p, clients_n, procs)] for p in range(procs)]
    share = batch and max(1, batch // procs)  # ``batch`` at a time over all the processes.
    jobs = [(urls, server.codec, 2.0, share, cpus) for urls in shards]
    workers = [context.Process(target=storm_process, args=(job, results)) for job in jobs]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=180) for _ in workers]
    except queue.Empty:
        raise TimeoutError("the storm's clients did not finish") from None
    finally:
        _reap(workers)
    _, cpu_after = proc_stats(server.pids())
    return {
        **_admission(clients_n, outcomes),
        "server_cpu_s": round(cpu_after - cpu_before, 2),
        "p99_ms": None,
    }


def _admission(clients_n, outcomes):
    """What the storm processes saw, added up: who was greeted, by when, and the errors."""
    greeted = sum(outcome["greeted"] for outcome in outcomes)
    errors = collections.Counter()
    for outcome in outcomes:
        errors.update(outcome["errors"])
    started = min(outcome["started"] for outcome in outcomes)
    last = max(outcome["last_greeted"] for outcome in outcomes)
    frames = sum(outcome["frames_after_hello"] for outcome in outcomes)
    return {
        "clients": clients_n,
        "admitted": greeted,
        "not_greeted": clients_n - greeted,
        "all_greeted_s": round(last - started, 2),
        "frames_after_hello": frames,
        "frames_per_client": round(frames / max(greeted, 1), 1),
        # Clients not admitted, by the error they got (a timeout: the server was too slow).
        "errors": dict(errors),
    }


def run_restart_storm(server, clients_n, procs, cpus=None):
    """The page after a deploy: every client connected, PRIOR messages in, then the server
    restarts and every client reconnects at once with a freshly issued token and, where the
    server resumes (the chat), ``resume=1`` and its marks. How long until the last is greeted,
    who was not, and what was replayed: nothing, since nothing was missed (and no duplicate).

    The reference servers cannot resume: their clients just reconnect at once. Timed from the
    reconnect, on a server already up and idle; the CPU is the server's over the reconnect.
    """
    fresh = server.fresh_urls(clients_n)  # Before the restart: no login in the timed part.
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(procs + 1), context.Queue()
    shards = [list(range(p, clients_n, procs)) for p in range(procs)]
    jobs = [([server.url(n) for n in shard], [fresh[n] for n in shard], server.codec,
             server.resumes, PRIOR, 2.0, cpus) for shard in shards]  # fmt: skip
    workers = [context.Process(target=restart_process, args=(j, barrier, results)) for j in jobs]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=180)  # Connected.
        asyncio.run(send_prior(server.url(clients_n), server.codec, PRIOR))
        barrier.wait(timeout=60)  # Every client has them in its marks.
        restart_began = time.monotonic()
        server.restart()
        restart_s = time.monotonic() - restart_began
        _, cpu_before = proc_stats(server.pids())
        barrier.wait(timeout=120)  # Go.
        outcomes = [results.get(timeout=300) for _ in workers]
    except (threading.BrokenBarrierError, queue.Empty, OSError, WSError) as error:
        raise TimeoutError(f"the restart storm did not finish: {_why(error, results)}") from None
    finally:
        _reap(workers)
    _, cpu_after = proc_stats(server.pids())
    failures = [outcome for outcome in outcomes if isinstance(outcome, str)]
    if failures:
        raise TimeoutError(failures[0])
    return {
        **_admission(clients_n, outcomes),
        # Messages sent again on the resume (none was missed: this must be 0), those among them
        # the client already had, and the resumes that ended with "resumed" (the chat: all).
        "replayed": sum(outcome["replayed"] for outcome in outcomes),
        "duplicates": sum(outcome["duplicates"] for outcome in outcomes),
        "resumed": sum(outcome["resumed"] for outcome in outcomes),
        "restart_s": round(restart_s, 2),
        "server_cpu_s": round(cpu_after - cpu_before, 2),
        "p99_ms": None,
    }


def _why(error, results):
    """What broke a storm: a client process's own error if one sent it (it broke the barrier),
    else ``error``."""
    try:
        reported = results.get(timeout=5)
    except queue.Empty:
        reported = None
    return reported if isinstance(reported, str) else f"{type(error).__name__}: {error}"


def _reap(workers):
    """Wait for the client processes; kill any that outlived the scenario."""
    for worker in workers:
        worker.join(30)
        if worker.is_alive():
            worker.kill()


def quantile(ordered, q):
    """The ``q`` quantile of sorted values (nearest rank), or None."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def _round(value):
    return None if value is None else round(value, 2)


@contextlib.contextmanager
def running(server_class, users, **options):
    server = server_class(users, **options)
    try:
        yield server
    finally:
        server.close()


def raise_file_limit():
    """Thousands of sockets need more than the default 1,024 open files (children inherit it)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(args):
    """Every requested scenario on every requested server; returns the results."""
    scenarios = SMOKE if args.smoke else FULL
    names = args.only or list(scenarios)
    results = {}
    for name in names:
        rounds = {}
        # Rounds alternate between the servers, so that a busy moment hits both alike.
        for _ in range(1 if name in STORMS else args.repeat):
            for server_name in args.servers:
                outcome = run_one(args, server_name, name, scenarios[name])
                rounds.setdefault(server_name, []).append(outcome)
                print(f"{name:14} {server_name:9} {json.dumps(outcome)}", flush=True)
        results[name] = {server: median_of(outcomes) for server, outcomes in rounds.items()}
    if args.plot:
        results["fanout_curve"] = fanout_curve(args.servers, args.smoke, args.pin)
    return results


def run_one(args, server_name, name, size):
    """One round of scenario ``name`` on a fresh server (no scenario inherits another's memory
    or threads)."""
    clients_n, senders, rate, seconds = size
    options = SERVER_OPTIONS.get(name, {}) if server_name == "chat" else {}
    server_cpus, client_cpus = args.pin or (None, None)
    with running(SERVERS[server_name], clients_n + 1, cpus=server_cpus, **options) as server:
        if name in STORMS:
            return attempt_storm(STORMS[name], server, clients_n, args.procs, client_cpus)
        scenario = (name, clients_n, senders, rate, seconds, args.procs, client_cpus)
        outcome = attempt(server, *scenario)
        if "error" not in outcome:
            outcome["stored"] = server.stored()
        return outcome


def median_of(outcomes):
    """One result from several rounds: each number is the median of the rounds that completed.

    p99 latency at saturation moves by a factor of several from run to run, for both servers;
    the median of a few rounds is what to compare. Each round's throughput and p99 are kept.
    """
    if len(outcomes) == 1:
        return outcomes[0]
    completed = [outcome for outcome in outcomes if "error" not in outcome]
    if not completed:
        return outcomes[0]
    merged = {}
    for key, value in completed[0].items():
        values = [outcome[key] for outcome in completed]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if not numbers:
            merged[key] = value
        elif all(isinstance(v, int) for v in values):
            merged[key] = round(statistics.median(values))
        else:
            merged[key] = _round(statistics.median(values))
    merged["rounds"] = [
        {"deliveries_per_s": o.get("deliveries_per_s"), "p99_ms": o.get("p99_ms")}
        if "error" not in o
        else {"error": o["error"]}
        for o in outcomes
    ]
    return merged


def attempt(*scenario):
    """``run_scenario(*scenario)``; a server that cannot keep up is a result, not a crash."""
    try:
        return run_scenario(*scenario)
    except (TimeoutError, OSError, WSError) as error:
        return {"error": f"{type(error).__name__}: {error}", "p99_ms": None}


def attempt_storm(kind, server, clients_n, procs, cpus):
    """A storm of ``kind`` (STORMS); one the server cannot take is a result, not a crash."""
    try:
        if kind == "restart":
            return run_restart_storm(server, clients_n, procs, cpus)
        return run_storm(server, clients_n, procs, cpus, ADMIT_BATCH if kind == "admit" else None)
    except (TimeoutError, OSError) as error:
        return {"error": f"{type(error).__name__}: {error}", "p99_ms": None}


def fanout_curve(server_names, smoke, pin):
    """p99 latency against connected clients, one sender at 10 messages a second."""
    server_cpus, client_cpus = pin or (None, None)
    curve = {}
    for clients_n in (10, 20) if smoke else FANOUT_CURVE:
        for name in server_names:
            with running(SERVERS[name], clients_n + 1, cpus=server_cpus) as server:
                scenario = ("fanout", clients_n, 1, 10, 2 if smoke else 5, 1, client_cpus)
                outcome = attempt(server, *scenario)
            curve.setdefault(name, []).append((clients_n, outcome["p99_ms"]))
            print(f"fanout curve {name:9} {clients_n:5} clients: p99 {outcome['p99_ms']} ms")
    return curve


def markdown(results, settings):
    """The results as tables, with the chat's ratio to each other server where there is one."""
    columns = (
        "scenario", "server", "clients", "deliveries/s", "delivery ratio", "messages/s", "stored",
        "p50 ms", "p95 ms", "p99 ms", "max ms", "RSS/conn KB", "CPU s", "client CPU s", "dropped",
    )  # fmt: skip
    fields = (
        "clients", "deliveries_per_s", "delivery_ratio", "messages_per_s", "stored", "p50_ms",
        "p95_ms", "p99_ms", "max_ms", "rss_per_connection_kb", "server_cpu_s", "client_cpu_s",
        "dropped",
    )  # fmt: skip
    lines = [header(settings), "", "| " + " | ".join(columns) + " |",
             "| --- | --- |" + " ---: |" * len(fields)]  # fmt: skip
    for name, by_server in results.items():
        if name == "fanout_curve" or name in STORMS:
            continue
        for server, r in by_server.items():
            cells = (
                [r["error"]] + [""] * (len(fields) - 1)
                if "error" in r
                else [r.get(f) for f in fields]
            )
            lines.append(f"| {name} | {server} | " + " | ".join(map(str, cells)) + " |")
        for other, ratios in chat_ratios(by_server, load_ratios):
            lines.append(f"| {name} | chat ÷ {other} | {ratios} |" + " |" * 12)
    if len(lines) == 4:  # No load scenario ran: the storms' table alone.
        lines = lines[:1]
    return "\n".join(lines) + "\n" + storm_markdown(results)


def header(settings):
    """Which servers ran, and on which CPUs."""
    pin = settings["pin"]
    where = (
        f"server on CPUs {pin['server']}, clients on CPUs {pin['clients']}"
        if pin
        else "no CPU pinning"
    )
    return f"Servers: {', '.join(settings['servers'])}; {where}; {settings['sizes']} sizes."


def chat_ratios(by_server, ratios_of):
    """(other server, the chat's ratios to it) for each other server, when both completed."""
    chat = by_server.get("chat")
    if chat is None or "error" in chat:
        return []
    pairs = []
    for other, r in by_server.items():
        if other != "chat" and "error" not in r:
            pairs.append((other, " · ".join(ratios_of(chat, r))))
    return pairs


def load_ratios(chat, ref):
    """Throughput, p99 and memory per connection, chat over the other."""
    ratios = []
    if chat["deliveries_per_s"] and ref["deliveries_per_s"]:
        ratios.append(f"deliveries/s {chat['deliveries_per_s'] / ref['deliveries_per_s']:.2f}x")
    if chat["p99_ms"] and ref["p99_ms"]:
        ratios.append(f"p99 {chat['p99_ms'] / ref['p99_ms']:.2f}x")
    if ref["rss_per_connection_kb"] > 0:
        ratio = chat["rss_per_connection_kb"] / ref["rss_per_connection_kb"]
        ratios.append(f"RSS/conn {ratio:.2f}x")
    return ratios


def storm_ratios(chat, ref):
    """Time to greet everyone and the server's CPU for it, chat over the other."""
    ratios = []
    for field, label in (("all_greeted_s", "greeted in"), ("server_cpu_s", "CPU")):
        if chat.get(field) and ref.get(field):
            ratios.append(f"{label} {chat[field] / ref[field]:.2f}x")
    return ratios


def storm_markdown(results):
    """The connection storms' own table (they measure admission, not latency)."""
    fields = ("clients", "admitted", "not_greeted", "all_greeted_s", "frames_after_hello",
              "frames_per_client", "replayed", "duplicates", "resumed", "restart_s",
              "server_cpu_s", "errors")  # fmt: skip
    lines = []
    for name, by_server in results.items():
        if name not in STORMS:
            continue
        if not lines:
            lines = ["", "| scenario | server | " + " | ".join(fields) + " |",
                     "| --- | --- |" + " ---: |" * len(fields)]  # fmt: skip
        for server, r in by_server.items():
            if "error" in r:
                cells = [r["error"]] + [""] * (len(fields) - 1)
            else:
                errors = ", ".join(f"{n} {kind}" for kind, n in r.get("errors", {}).items())
                cells = [r.get(f, "") for f in fields[:-1]] + [errors or "none"]
            lines.append(f"| {name} | {server} | " + " | ".join(map(str, cells)) + " |")
        for other, ratios in chat_ratios(by_server, storm_ratios):
            lines.append(f"| {name} | chat ÷ {other} | {ratios} |" + " |" * (len(fields) - 1))
    return "\n".join(lines) + ("\n" if lines else "")


def plot(curve, path):
    """p99 against clients, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for server, points in curve.items():
        points = [p for p in points if p[1] is not None]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=server)
    axes.set_xlabel("connected clients")
    axes.set_ylabel("p99 latency (ms)")
    axes.set_title("Fan-out: one sender, 10 messages/s")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def parse_pin(value):
    """``SERVER:CLIENT`` CPU lists (``0:1``, ``0,1:1``): the sets to pin each side to."""
    try:
        sides = [{int(cpu) for cpu in side.split(",")} for side in value.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not SERVER:CLIENT CPU lists: {value!r}") from None
    if len(sides) != 2:
        raise argparse.ArgumentTypeError(f"not SERVER:CLIENT CPU lists: {value!r}")
    available = os.sched_getaffinity(0)
    if not all(side <= available for side in sides):
        raise argparse.ArgumentTypeError(f"CPUs available here: {sorted(available)}")
    return sides


def parse_servers(value):
    """A comma list of SERVERS' names."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SERVERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"servers are among {', '.join(SERVERS)}")
    return names


def main():
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--only", action="append", choices=list(FULL), help="one scenario (again)")
    parser.add_argument(
        "--servers",
        type=parse_servers,
        default=["chat", "reference"],
        help=f"comma list among {', '.join(SERVERS)} (default chat,reference)",
    )
    parser.add_argument("--no-reference", action="store_true", help="the chat alone")
    parser.add_argument(
        "--pin", type=parse_pin, help="SERVER:CLIENT CPU lists, e.g. 0:1 (default: no pinning)"
    )
    parser.add_argument("--plot", action="store_true", help="also the p99-against-clients curve")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument(
        "--procs", type=int, default=2, help="client processes sharing the load (default 2)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds per scenario, reported as medians"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat takes 1 or more")
    if args.no_reference:
        args.servers = ["chat"]
    raise_file_limit()
    settings = {
        "servers": args.servers,
        "pin": args.pin and {"server": sorted(args.pin[0]), "clients": sorted(args.pin[1])},
        "sizes": "smoke" if args.smoke else "full",
        "procs": args.procs,
    }
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "smoke" if args.smoke else "latest"
    document = {"settings": settings, **results}
    (args.out / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(results, settings))
    if args.plot and "fanout_curve" in results:
        plot(results["fanout_curve"], args.out / f"{stem}-p99.png")
    print(markdown(results, settings))


if __name__ == "__main__":
    main()
