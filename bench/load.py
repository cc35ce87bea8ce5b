"""The load generator's client side: runs in its own processes, one asyncio loop each.

Spawned by ``python -m bench`` (``run_scenario``); importable so that ``multiprocessing`` can start
it in a fresh interpreter.
"""

import asyncio
import json
import os
import threading
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def open_clients(urls, latencies, stop, last):
    """``count`` clients, each reading from the moment it connects (as a real client does).

    Returns the sockets and their reader tasks; readers record latencies only once
    ``latencies`` is switched on (``latencies.on = True``).
    """

    async def one(url):
        # No client pings: a loaded server's late pong must not end the measurement.
        ws = await connect(
            url, max_size=None, compression=None, open_timeout=120, ping_interval=None
        )
        await ws.recv()
        return ws, asyncio.create_task(receive(ws, latencies, stop, last))

    opened = []
    for start in range(0, len(urls), 100):  # Batches keep the accept queue from overflowing.
        opened += await asyncio.gather(*(one(url) for url in urls[start : start + 100]))
    return [ws for ws, _ in opened], [task for _, task in opened]


class Latencies(list):
    """Milliseconds from send to receipt; recorded only while ``on``."""

    on = False


async def receive(ws, latencies, stop, last):
    """Record every message's latency until ``stop`` is set and the stream is quiet."""
    while True:
        try:
            # Two quiet seconds after the last send end the reading: a lagging server still counts.
            data = await asyncio.wait_for(ws.recv(), timeout=2.0)
        except TimeoutError:
            if stop.is_set():
                return
            continue
        except ConnectionClosed:
            return
        now = time.time_ns()
        frame = json.loads(data)
        if latencies.on and frame.get("type") == "message":
            latencies.append((now - int(frame["text"].split(":", 2)[1])) / 1e6)
            last[0] = max(last[0], time.monotonic())


async def send(ws, sender, rate, seconds):
    """Send ``rate`` messages a second for ``seconds``, each stamped with its send time."""
    count = int(rate * seconds)
    start = time.monotonic()
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        text = f"{sender}:{time.time_ns()}:{n}"
        try:
            await ws.send(
                json.dumps({"type": "message", "text": text, "client_id": f"{sender}-{n}"})
            )
        except ConnectionClosed:
            return n  # Counted as sent so far; the delivery ratio shows the loss.
    return count


async def _storm(urls, quiet):
    """Open every socket at once; when each was greeted, and how many frames followed."""
    greeted, frames = [], [0]

    async def one(url):
        try:
            ws = await connect(
                url, max_size=None, compression=None, open_timeout=120, ping_interval=None
            )
            await asyncio.wait_for(ws.recv(), 120)  # hello
        except (TimeoutError, OSError, ConnectionClosed):
            return None
        greeted.append(time.monotonic())
        return ws

    async def count(ws):
        """Frames after hello (presence, for the chat) until ``quiet`` seconds of silence."""
        while True:
            try:
                await asyncio.wait_for(ws.recv(), quiet)
            except (TimeoutError, ConnectionClosed):
                return
            frames[0] += 1

    started = time.monotonic()
    sockets = [ws for ws in await asyncio.gather(*(one(url) for url in urls)) if ws is not None]
    await asyncio.gather(*(count(ws) for ws in sockets))
    await asyncio.gather(*(ws.close() for ws in sockets))
    return {
        "started": started,
        "greeted": len(greeted),
        "last_greeted": max(greeted, default=started),
        "frames_after_hello": frames[0],
    }


def storm_process(urls, quiet, results):
    """One client process of a connection storm."""
    results.put(asyncio.run(_storm(urls, quiet)))


def client_process(job, barrier, results):
    """One client process: its share of the clients, and of the senders among them."""
    try:
        results.put(asyncio.run(_clients(*job, barrier)))
    except (TimeoutError, OSError, ConnectionClosed, threading.BrokenBarrierError) as error:
        barrier.abort()
        results.put(f"{type(error).__name__}: {error}")


async def _clients(urls, sender_indexes, rate, seconds, slow_url, barrier):
    """Connect, wait for the other processes, send and read; what was sent and measured."""
    latencies, stop, last = Latencies(), asyncio.Event(), [0.0]
    clients, readers = await open_clients(urls, latencies, stop, last)
    await asyncio.to_thread(barrier.wait, 180)
    await asyncio.to_thread(barrier.wait, 30)
    # Recording starts before anything else: the other processes' senders start now too.
    latencies.on = True
    slow = None
    if slow_url:  # One more client that never reads: its queue fills, then TCP.
        slow = await connect(slow_url, max_queue=1, compression=None, ping_interval=None)
    started = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable across processes.
    sent = sum(
        await asyncio.gather(
            *(send(clients[i], f"{os.getpid()}.{i}", rate, seconds) for i in sender_indexes)
        )
    )
    stop.set()
    await asyncio.gather(*readers)
    await asyncio.gather(*(ws.close() for ws in clients + ([slow] if slow else [])))
    return {"sent": sent, "latencies": list(latencies), "started": started, "last": last[0]}
