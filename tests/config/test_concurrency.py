"""config.concurrency.HttpConcurrencyLimit: at most `limit` requests inside, the rest in order, a 503 with
Retry-After after the wait, the slot given back when the response starts; WebSockets and /healthz untouched."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from config.concurrency import HttpConcurrencyLimit

pytestmark = pytest.mark.asyncio


class SlowApp:
    """An ASGI app that records how many requests are inside at once, and answers after `release` is set."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.order: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.inside += 1
        self.most = max(self.most, self.inside)
        self.order.append(scope["path"])
        try:
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
        finally:
            self.inside -= 1
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, path: str, kind: str = "http") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": kind, "path": path}, receive, send)
    return sent


async def test_at_most_the_limit_run_at_once_and_the_rest_follow_in_order() -> None:
    inner = SlowApp()
    limited = HttpConcurrencyLimit(inner, limit=2, wait_seconds=10)
    calls = [asyncio.create_task(call(limited, f"/r{n}")) for n in range(6)]
    await asyncio.sleep(0.05)
    assert (inner.inside, limited.waiting) == (2, 4)
    inner.release.set()
    results = await asyncio.gather(*calls)
    assert inner.most == 2
    assert inner.order == [f"/r{n}" for n in range(6)]
    assert all(r[0]["status"] == 200 for r in results)
    assert limited.waiting == 0


async def test_a_request_that_waits_too_long_gets_503_with_retry_after() -> None:
    inner = SlowApp()
    limited = HttpConcurrencyLimit(inner, limit=1, wait_seconds=0.2, retry_after=7)
    first = asyncio.create_task(call(limited, "/slow"))
    await asyncio.sleep(0.05)
    refused = await call(limited, "/late")
    start, body = refused
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"7"
    assert json.loads(body["body"])["code"] == "server_busy"
    assert inner.order == ["/slow"]  # the late one never reached the app
    inner.release.set()
    assert (await first)[0]["status"] == 200
    # The slot is free again: the next request goes straight in.
    assert (await call(limited, "/next"))[0]["status"] == 200


async def test_the_slot_is_given_back_when_the_response_starts() -> None:
    entered: list[str] = []
    finish = asyncio.Event()

    async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await finish.wait()  # a long download to a slow phone
        await send({"type": "http.response.body", "body": b"done"})

    limited = HttpConcurrencyLimit(streaming, limit=1, wait_seconds=5)
    downloads = [asyncio.create_task(call(limited, "/file")), asyncio.create_task(call(limited, "/file2"))]
    for _ in range(50):
        if len(entered) == 2:
            break
        await asyncio.sleep(0.01)
    assert entered == ["/file", "/file2"]  # the second got in while the first was still streaming
    finish.set()
    assert [r[0]["status"] for r in await asyncio.gather(*downloads)] == [200, 200]


async def test_websockets_healthz_and_an_off_limit_pass_straight_through() -> None:
    inner = SlowApp()
    limited = HttpConcurrencyLimit(inner, limit=1, wait_seconds=0.1)
    inner.release.set()
    blocker = asyncio.Event()

    async def hold(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await blocker.wait()
        await inner(scope, receive, send)

    held = HttpConcurrencyLimit(hold, limit=1, wait_seconds=0.1)
    busy = asyncio.create_task(call(held, "/busy"))
    await asyncio.sleep(0.02)
    assert (await call(held, "/other"))[0]["status"] == 503
    blocker.set()
    assert (await call(held, "/healthz"))[0]["status"] == 200
    assert (await call(held, "/ws/", kind="websocket"))[0]["status"] == 200
    await busy
    off = HttpConcurrencyLimit(inner, limit=0, wait_seconds=0.1)
    results = await asyncio.gather(*(call(off, f"/{n}") for n in range(5)))
    assert all(r[0]["status"] == 200 for r in results)
    assert (await call(limited, "/x"))[0]["status"] == 200


async def test_the_crisis_teams_requests_have_their_own_lane() -> None:
    inner = SlowApp()
    limited = HttpConcurrencyLimit(inner, limit=1, priority_limit=1, wait_seconds=0.3)
    answers = [asyncio.create_task(call(limited, f"/acme/api/safety/answer/t{n}/")) for n in range(3)]
    await asyncio.sleep(0.05)
    assert (inner.inside, limited.waiting) == (1, 2)
    instruction = asyncio.create_task(call(limited, "/acme/api/safety/incidents/7/instructions/"))
    jma = asyncio.create_task(call(limited, "/api/jma/documents/"))
    await asyncio.sleep(0.05)
    assert inner.order == ["/acme/api/safety/answer/t0/", "/acme/api/safety/incidents/7/instructions/"]
    inner.release.set()
    results = await asyncio.gather(*answers, instruction, jma)
    assert [r[0]["status"] for r in results] == [200, 200, 200, 200, 200]
    assert inner.most == 2  # one in each lane
