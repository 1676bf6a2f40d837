"""The bare-`websockets` reference of `bench.chat_fanout`: the fastest a single Python process here can fan
out, with no framework and no broker.

Every connection to any path but /send is kept as a listener. Each text message arriving on a /send
connection is passed to every listener at once with `websockets.asyncio.server.broadcast`, as a chat server
relays what one client sends:

    .venv/bin/python -m bench.fanout_bare --port 8002
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, broadcast, serve


async def serve_forever(host: str, port: int) -> None:
    listeners: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path.startswith("/send"):
            async for message in connection:
                broadcast(listeners, message)
            return
        listeners.add(connection)
        try:
            await connection.wait_closed()
        finally:
            listeners.discard(connection)

    async with serve(handler, host, port, compression=None, max_queue=None) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
