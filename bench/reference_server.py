"""The yardstick: a minimal asyncio broadcast server built on the ``websockets`` library.

It does what the chat does minus the real work (no auth, no database, no rate limits): every
text frame is re-broadcast to every connected client, encoded once, as a frame of the chat's
shape and size (``protocol.message_frame``), so that the clients, which share the machine with
the server, spend the same time reading either server's frames (bench/socketio_server.py sends
the same fields).
``python -m bench.reference_server PORT``.
"""

import asyncio
import datetime
import itertools
import json
import sys

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()
IDS = itertools.count(1)


async def handler(ws):
    """Greet, then broadcast each message to everyone."""
    CLIENTS.add(ws)
    try:
        await ws.send(json.dumps({"type": "hello"}))
        async for data in ws:
            frame = json.loads(data)
            fields = message_fields(frame["text"], frame.get("client_id"))
            broadcast(CLIENTS, json.dumps(fields, ensure_ascii=False, separators=(",", ":")))
    finally:
        CLIENTS.discard(ws)


def message_fields(text, client_id):
    """A frame like the chat's ``message`` frame, fields and all."""
    return {
        "type": "message",
        "id": next(IDS),
        "room": "general",
        "user": "user0",
        "user_id": 1,
        "text": text,
        "ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
        "client_id": client_id,
    }


async def main(port):
    """Serve until killed."""
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
