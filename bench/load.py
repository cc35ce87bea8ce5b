"""The load generator's client side: runs in its own processes, one asyncio loop each.

Clients are ``picows`` connections: frames are parsed in C and handed to a callback, with no
task, future or timer per frame. The generator shares two cores with the server it measures, so
every microsecond it spends per frame is one the server does not get. The ``websockets`` client
it replaced spent two to three times as much CPU per delivery (37 µs against 11 to 17 µs at 25,000
frames/s, against the same reference server; bench/results/part11-generator-*), and at the
burst's 100,000 frames/s it, not the server, was the limit.

Spawned by ``python -m bench`` (``run_scenario``); importable so that ``multiprocessing`` can start
it in a fresh interpreter.
"""

import asyncio
import collections
import json
import os
import threading
import time

from picows import WSError, WSListener, WSMsgType, ws_connect

from bench.engineio import CODECS, FRAME, REPLY

# Two quiet seconds after the last send end the reading: a lagging server still counts.
QUIET = 2.0
CONNECT_TIMEOUT = 120


class Latencies(list):
    """Milliseconds from send to receipt; recorded only while ``on``."""

    on = False


class Activity:
    """When any client of this process last received a frame (to tell when the stream is over)."""

    def __init__(self):
        self.last = time.monotonic()

    async def quiet(self, seconds, since=0.0):
        """Return once no client has received anything for ``seconds``, counted from ``since``
        at the earliest (a process without senders must not stop before the others' messages)."""
        while (idle := time.monotonic() - max(self.last, since)) < seconds:
            await asyncio.sleep(seconds - idle)


class Client(WSListener):
    """One client: greeted once, then every chat message's latency recorded as it arrives.

    ``codec`` (bench/engineio.py) says what the server speaks; ``opening`` is a payload sent as
    soon as the socket is open (a ``resume`` frame).
    """

    def __init__(self, activity, codec, latencies=None, last=None, opening=None):
        self.activity, self.codec, self.latencies, self.last = activity, codec, latencies, last
        self.opening = opening
        self.greeted = asyncio.get_running_loop().create_future()
        self.frames_after_hello = 0

    def on_ws_connected(self, transport):
        """Send the opening frame, if any, before anything is read."""
        if self.opening is not None:
            transport.send(WSMsgType.TEXT, self.opening)

    def on_ws_frame(self, transport, frame):
        """A frame: the greeting, a chat message (timed) or anything else (counted)."""
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_reason())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return  # Pings are answered by picows itself.
        now = time.time_ns()
        kind, body = self.codec.decode(frame.get_payload_as_bytes())
        if kind is not FRAME:
            if kind is REPLY:
                transport.send(WSMsgType.TEXT, body)
            return
        self.activity.last = time.monotonic()
        if not self.greeted.done():
            self.greeted.set_result(None)
            self.on_hello(body)
            return
        self.frames_after_hello += 1
        self.on_frame(body, now)

    def on_hello(self, body):
        """The greeting: nothing to keep."""

    def on_frame(self, body, now):
        """A chat message's latency, while recording."""
        if self.latencies is None or not self.latencies.on:
            return
        message = json.loads(body)
        if message.get("type") == "message":
            self.latencies.append((now - int(message["text"].split(":", 2)[1])) / 1e6)
            self.last[0] = self.activity.last

    def on_ws_disconnected(self, transport):
        """A socket closed before its greeting fails its connect."""
        if not self.greeted.done():
            self.greeted.set_exception(ConnectionError("closed before the greeting"))


class Resumer(Client):
    """A client that keeps its marks, as the page does: the last message id it has in each room
    and the last change; reconnected with them, it counts what the server replays."""

    def __init__(self, activity, codec, marks=None, opening=None):
        super().__init__(activity, codec, opening=opening)
        self.rooms, self.changes = dict(marks["rooms"]) if marks else {}, None
        if marks:
            self.changes = marks["changes"]
        self.before = dict(self.rooms)  # The marks it reconnected with.
        self.received = self.replayed = self.duplicates = self.resumed = 0

    def marks(self):
        """Where this client stands, for its ``resume`` frame."""
        return {"rooms": dict(self.rooms), "changes": self.changes}

    def on_hello(self, body):
        """The chat's hello lists every room with its last id, and the latest change."""
        hello = json.loads(body)
        for room in hello.get("rooms", ()):
            if isinstance(room.get("last_id"), int):
                self.rooms.setdefault(room["room"], room["last_id"])
        if self.changes is None:
            self.changes = hello.get("changes")

    def on_frame(self, body, now):
        """Messages move the marks; one at or below the mark it resumed from is a duplicate."""
        frame = json.loads(body)
        if frame.get("type") == "resumed":
            self.resumed += 1
            self.changes = frame["changes"]
        if frame.get("type") != "message":
            return
        room, message_id = frame.get("room", "general"), frame["id"]
        self.received += 1
        if self.opening is not None:
            self.replayed += 1
            self.duplicates += message_id <= self.before.get(room, -1)
        self.rooms[room] = max(self.rooms.get(room, 0), message_id)


class Deaf(WSListener):
    """A client that stops reading once connected: its server-side queue fills, then TCP's."""

    def __init__(self, codec):
        self.codec = codec

    def on_ws_connected(self, transport):
        """Join what it must to be sent broadcasts, then stop reading for good."""
        if self.codec.join is not None:
            transport.send(WSMsgType.TEXT, self.codec.join)
        transport.underlying_transport.pause_reading()


async def connect(url, listener):
    """Open ``url`` and wait for its greeting; the transport."""
    transport, client = await ws_connect(
        lambda: listener,
        url,
        websocket_handshake_timeout=CONNECT_TIMEOUT,
        max_frame_size=2**24,
    )
    if client is None:  # picows: the server hung up before its handshake's answer.
        raise ConnectionError("closed during the handshake")
    await asyncio.wait_for(client.greeted, CONNECT_TIMEOUT)
    return transport


def pin(cpus):
    """Run this process (and what it starts) on ``cpus`` only, if given."""
    if cpus:
        os.sched_setaffinity(0, cpus)


async def open_clients(urls, make_client, batch=100):
    """A client per url from ``make_client()``, ``batch`` connecting at a time (that keeps the
    accept queue from overflowing), each reading from the moment it connects (as a real client
    does); the transports and the clients."""
    transports, clients = [], [make_client() for _ in urls]
    for start in range(0, len(urls), batch):
        part = range(start, min(start + batch, len(urls)))
        transports += await asyncio.gather(*(connect(urls[n], clients[n]) for n in part))
    return transports, clients


async def send(transport, codec, sender, rate, seconds):
    """Send ``rate`` messages a second for ``seconds``, each stamped with its send time."""
    count = int(rate * seconds)
    start = time.monotonic()
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if transport.is_disconnected:
            return n  # Counted as sent so far; the delivery ratio shows the loss.
        text = f"{sender}:{time.time_ns()}:{n}"
        frame = {"type": "message", "text": text, "client_id": f"{sender}-{n}"}
        transport.send(WSMsgType.TEXT, codec.encode(frame))
    return count


async def close_all(transports):
    """Close every socket politely and wait (a little) for the server to hang up."""
    for transport in transports:
        transport.send_close()
    await asyncio.gather(
        *(asyncio.wait_for(t.wait_disconnected(), 10) for t in transports),
        return_exceptions=True,  # One that lingers is disconnected below.
    )
    for transport in transports:
        transport.disconnect()


async def _storm(urls, codec, quiet, batch):
    """Open every socket, ``batch`` at a time (None: all at once); when each was greeted, and
    how many frames followed."""
    activity, greeted, clients, errors = Activity(), [], [], collections.Counter()

    async def one(client, url):
        try:
            transport = await connect(url, client)
        except (TimeoutError, OSError, WSError) as error:
            errors[type(error).__name__] += 1  # Told in the results: refused, or too slow?
            return None
        greeted.append(time.monotonic())
        clients.append(client)
        return transport

    started, transports = time.monotonic(), []
    for start in range(0, len(urls), batch or len(urls) or 1):
        part = urls[start : start + batch] if batch else urls
        made = await asyncio.gather(*(one(Client(activity, codec), url) for url in part))
        transports += [t for t in made if t is not None]
    await activity.quiet(quiet)  # Presence after the greetings, until the stream falls silent.
    await close_all(transports)
    return {
        "started": started,
        "greeted": len(greeted),
        "last_greeted": max(greeted, default=started),
        "frames_after_hello": sum(client.frames_after_hello for client in clients),
        "errors": dict(errors),
    }


def storm_process(job, results):
    """One client process of a connection storm: ``job`` is (urls, codec name, quiet seconds,
    batch or None, cpus or None)."""
    urls, codec, quiet, batch, cpus = job
    pin(cpus)
    results.put(asyncio.run(_storm(urls, CODECS[codec](), quiet, batch)))


def restart_process(job, barrier, results):
    """One client process of a restart storm (``_restart``)."""
    _run_job(_restart, job, barrier, results)


def _run_job(main, job, barrier, results):
    """Pin this process to the job's CPUs (its last item), then put what ``main(*job, barrier)``
    returns, or its failure as a line of text, in ``results``; a failure breaks the barrier, so
    that the other processes stop waiting for this one."""
    pin(job[-1])
    try:
        results.put(asyncio.run(main(*job[:-1], barrier)))
    except (TimeoutError, OSError, WSError, threading.BrokenBarrierError) as error:
        barrier.abort()
        results.put(f"{type(error).__name__}: {error}")


async def _restart(urls, fresh_urls, codec_name, resume, prior, quiet, barrier):
    """Connect, take marks once ``prior`` messages are in, lose the server to its restart, then
    reconnect every socket at once from ``fresh_urls``, with a ``resume`` frame if ``resume``.

    The main process sends the messages between the first two barriers and restarts the server
    between the second and the third.
    """
    activity, codec = Activity(), CODECS[codec_name]()
    transports, clients = await open_clients(urls, lambda: Resumer(activity, codec))
    await asyncio.to_thread(barrier.wait, 180)  # Connected: the messages come.
    await _until(lambda: all(c.received >= prior for c in clients), CONNECT_TIMEOUT)
    await asyncio.to_thread(barrier.wait, 60)  # Marks taken: the server restarts.
    await asyncio.gather(*(asyncio.wait_for(t.wait_disconnected(), 60) for t in transports))
    await asyncio.to_thread(barrier.wait, 120)  # The server is back: everyone reconnects.
    started = time.monotonic()
    outcome = await _storm_back(fresh_urls, clients, codec, resume, activity)
    await activity.quiet(quiet)  # Replays and presence, until the stream falls silent.
    await close_all(outcome.pop("transports"))
    back = outcome.pop("clients")
    return {
        "started": started,
        **outcome,
        "frames_after_hello": sum(client.frames_after_hello for client in back),
        "replayed": sum(client.replayed for client in back),
        "duplicates": sum(client.duplicates for client in back),
        "resumed": sum(client.resumed for client in back),
    }


async def _storm_back(urls, before, codec, resume, activity):
    """Every client reconnects at once; when each was greeted and what it was replayed."""
    greeted, clients, errors, transports = [], [], collections.Counter(), []

    async def one(url, old):
        frame = {"type": "resume", **old.marks()} if resume else None
        client = Resumer(activity, codec, old.marks(), frame and codec.encode(frame))
        try:
            transports.append(await connect(url, client))
        except (TimeoutError, OSError, WSError) as error:
            errors[type(error).__name__] += 1
            return
        greeted.append(time.monotonic())
        clients.append(client)

    await asyncio.gather(*(one(url, old) for url, old in zip(urls, before, strict=True)))
    return {
        "greeted": len(greeted),
        "last_greeted": max(greeted, default=time.monotonic()),
        "errors": dict(errors),
        "clients": clients,
        "transports": transports,
    }


async def _until(condition, timeout):
    """Wait (polling, bounded) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the messages before the restart did not all arrive")
        await asyncio.sleep(0.05)


async def send_prior(url, codec_name, count):
    """Send ``count`` messages from one more client and wait until it has them back."""
    activity, codec = Activity(), CODECS[codec_name]()
    client = Resumer(activity, codec)
    transport = await connect(url, client)
    for n in range(count):
        frame = {"type": "message", "text": f"prior:{time.time_ns()}:{n}", "client_id": f"p{n}"}
        transport.send(WSMsgType.TEXT, codec.encode(frame))
    await _until(lambda: client.received >= count, CONNECT_TIMEOUT)
    await close_all([transport])


def client_process(job, barrier, results):
    """One client process: its share of the clients, and of the senders among them."""
    _run_job(_clients, job, barrier, results)


async def _clients(urls, codec_name, sender_indexes, rate, seconds, slow_url, barrier):
    """Connect, wait for the other processes, send and read; what was sent and measured."""
    latencies, last, activity, codec = Latencies(), [0.0], Activity(), CODECS[codec_name]()
    clients, _ = await open_clients(urls, lambda: Client(activity, codec, latencies, last))
    await asyncio.to_thread(barrier.wait, 180)
    # Every process is connected and nobody sends before the next barrier: recording starts now,
    # so that no process can miss another's first messages while it wakes from the barrier.
    latencies.on = True
    await asyncio.to_thread(barrier.wait, 30)
    cpu_before = time.process_time()
    slow = []
    if slow_url:  # One more client that never reads.
        deaf = await ws_connect(lambda: Deaf(codec), slow_url, websocket_handshake_timeout=30)
        slow.append(deaf[0])
    started = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable across processes.
    sent = sum(
        await asyncio.gather(
            *(send(clients[i], codec, f"{os.getpid()}.{i}", rate, seconds) for i in sender_indexes)
        )
    )
    # Every process's senders stop at about ``started + seconds``; a lagging server still counts.
    await activity.quiet(QUIET, since=started + seconds)
    cpu = time.process_time() - cpu_before
    dropped = sum(transport.is_disconnected for transport in clients)
    await close_all(clients + slow)
    return {
        "sent": sent,
        "latencies": list(latencies),
        "started": started,
        "last": last[0],
        "cpu_s": cpu,
        "dropped": dropped,
    }
