"""The yardstick: a minimal asyncio broadcast server built on the ``websockets`` library.

It does what the chat does minus the real work (no auth, no database): every text frame is
re-broadcast to every connected client, encoded once. ``python -m bench.reference_server PORT``.
"""

import asyncio
import json
import sys

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def handler(ws):
    """Greet, then broadcast each message to everyone."""
    CLIENTS.add(ws)
    try:
        await ws.send(json.dumps({"type": "hello"}))
        async for data in ws:
            text = json.loads(data)["text"]
            broadcast(CLIENTS, json.dumps({"type": "message", "text": text}))
    finally:
        CLIENTS.discard(ws)


async def main(port):
    """Serve until killed."""
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
