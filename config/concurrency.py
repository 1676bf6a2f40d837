"""At most HTTP_CONCURRENCY requests of one web process run Django at once; the rest wait their turn on the event
loop, in order of arrival.

Under ASGI every request runs its view in a thread of its own, and each takes a connection from the process's
database pool (DB_POOL_MAX_SIZE). In a burst (5,000 answers a minute after an earthquake) hundreds of threads wait
for 8 connections, the process spends its CPU switching between them, and after the pool's timeout each waiting
request becomes an HTTP 500 (bench.disaster saw this). Waiting here costs nothing but a coroutine: the requests
are served as fast as the database allows, in order, and one that waits longer than HTTP_QUEUE_SECONDS gets a 503
with Retry-After, which the PWA's outbox retries (an answer is never dropped). WebSockets are not limited here:
their handshakes are held by daphne's own connect timeout.

A slot is given back when the response starts: a long download (a talk file to a slow phone) must not hold it.

The crisis team's own requests (posting an instruction, sending, the board's API: PRIORITY_PATHS) have a lane of
their own with HTTP_PRIORITY_CONCURRENCY slots, so an instruction never waits behind thousands of answers."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

Scope = dict[str, Any]

# Never queued: the load balancer's probe must see the process, not the queue.
UNLIMITED_PATHS = frozenset({"/healthz"})
# The crisis team's lane: incidents (instructions, sends, the board, results), automatic dispatch, and JMA reports
# pushed in.
PRIORITY_PATHS = re.compile(r"^/[^/]+/api/safety/(incidents|auto)/|^/api/jma/")


class HttpConcurrencyLimit:
    def __init__(
        self,
        app: Any,
        *,
        limit: int,
        wait_seconds: float,
        priority_limit: int = 2,
        priority_paths: re.Pattern[str] = PRIORITY_PATHS,
        retry_after: int = 5,
    ) -> None:
        self.app = app
        self.limit = limit
        self.priority_limit = priority_limit
        self.priority_paths = priority_paths
        self.wait_seconds = wait_seconds
        self.retry_after = retry_after
        self._semaphores: dict[bool, asyncio.Semaphore] = {}
        self.waiting = 0  # requests waiting for a slot now (for tests and a curious operator)

    def _slots(self, priority: bool) -> asyncio.Semaphore:
        # Made on first use, inside the server's running loop.
        if priority not in self._semaphores:
            self._semaphores[priority] = asyncio.Semaphore(self.priority_limit if priority else self.limit)
        return self._semaphores[priority]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope.get("path") in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        priority = self.priority_limit > 0 and bool(self.priority_paths.match(scope.get("path", "")))
        slots = self._slots(priority)
        self.waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), timeout=self.wait_seconds)
        except TimeoutError:
            await self._busy(send)
            return
        finally:
            self.waiting -= 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                slots.release()

        async def send_and_release(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            await self.app(scope, receive, send_and_release)
        finally:
            release()

    async def _busy(self, send: Any) -> None:
        body = json.dumps(
            {"code": "server_busy", "message": "The server is busy; try again in a few seconds."}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(self.retry_after).encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
