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
    """One client: greeted once, then every chat message's latency recorded as it arrives."""

    def __init__(self, activity, latencies=None, last=None):
        self.activity, self.latencies, self.last = activity, latencies, last
        self.greeted = asyncio.get_running_loop().create_future()
        self.frames_after_hello = 0

    def on_ws_frame(self, transport, frame):
        """A frame: the greeting, a chat message (timed) or anything else (counted)."""
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_reason())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return  # Pings are answered by picows itself.
        now = time.time_ns()
        self.activity.last = time.monotonic()
        if not self.greeted.done():
            self.greeted.set_result(None)
            return
        self.frames_after_hello += 1
        if self.latencies is None or not self.latencies.on:
            return
        message = json.loads(frame.get_payload_as_bytes())
        if message.get("type") == "message":
            self.latencies.append((now - int(message["text"].split(":", 2)[1])) / 1e6)
            self.last[0] = self.activity.last

    def on_ws_disconnected(self, transport):
        """A socket closed before its greeting fails its connect."""
        if not self.greeted.done():
            self.greeted.set_exception(ConnectionError("closed before the greeting"))


class Deaf(WSListener):
    """A client that stops reading once connected: its server-side queue fills, then TCP's."""

    def on_ws_connected(self, transport):
        """Stop reading for good."""
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


async def open_clients(urls, latencies, last, activity):
    """A client per url, each reading from the moment it connects (as a real client does)."""
    transports = []
    for start in range(0, len(urls), 100):  # Batches keep the accept queue from overflowing.
        transports += await asyncio.gather(
            *(connect(url, Client(activity, latencies, last)) for url in urls[start : start + 100])
        )
    return transports


async def send(transport, sender, rate, seconds):
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
        transport.send(WSMsgType.TEXT, json.dumps(frame).encode())
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


async def _storm(urls, quiet):
    """Open every socket at once; when each was greeted, and how many frames followed."""
    activity, greeted, clients, errors = Activity(), [], [], collections.Counter()

    async def one(url):
        client = Client(activity)
        try:
            transport = await connect(url, client)
        except (TimeoutError, OSError, WSError) as error:
            errors[type(error).__name__] += 1  # Told in the results: refused, or too slow?
            return None
        greeted.append(time.monotonic())
        clients.append(client)
        return transport

    started = time.monotonic()
    transports = [t for t in await asyncio.gather(*(one(url) for url in urls)) if t is not None]
    await activity.quiet(quiet)  # Presence after the greetings, until the stream falls silent.
    await close_all(transports)
    return {
        "started": started,
        "greeted": len(greeted),
        "last_greeted": max(greeted, default=started),
        "frames_after_hello": sum(client.frames_after_hello for client in clients),
        "errors": dict(errors),
    }


def storm_process(urls, quiet, results):
    """One client process of a connection storm."""
    results.put(asyncio.run(_storm(urls, quiet)))


def client_process(job, barrier, results):
    """One client process: its share of the clients, and of the senders among them."""
    try:
        results.put(asyncio.run(_clients(*job, barrier)))
    except (TimeoutError, OSError, WSError, threading.BrokenBarrierError) as error:
        barrier.abort()
        results.put(f"{type(error).__name__}: {error}")


async def _clients(urls, sender_indexes, rate, seconds, slow_url, barrier):
    """Connect, wait for the other processes, send and read; what was sent and measured."""
    latencies, last, activity = Latencies(), [0.0], Activity()
    clients = await open_clients(urls, latencies, last, activity)
    await asyncio.to_thread(barrier.wait, 180)
    # Every process is connected and nobody sends before the next barrier: recording starts now,
    # so that no process can miss another's first messages while it wakes from the barrier.
    latencies.on = True
    await asyncio.to_thread(barrier.wait, 30)
    cpu_before = time.process_time()
    slow = []
    if slow_url:  # One more client that never reads.
        slow.append((await ws_connect(Deaf, slow_url, websocket_handshake_timeout=30))[0])
    started = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable across processes.
    sent = sum(
        await asyncio.gather(
            *(send(clients[i], f"{os.getpid()}.{i}", rate, seconds) for i in sender_indexes)
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
