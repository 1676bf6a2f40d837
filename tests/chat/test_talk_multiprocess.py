"""Talk over two real daphne processes sharing Redis and PostgreSQL: a message sent over REST to either process
reaches members connected to both, a member who reconnects to the other process catches up exactly, and a
burst of messages arrives on every socket gap-free and without duplicates.

As in tests/consumers/test_multiprocess.py: transactional tests (the subprocesses read committed data only),
synchronous test functions that drive the sockets with `asyncio.run`, the ORM used outside the event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection

from chat import services
from chat.models import Room
from directory.models import User
from tests import factories
from tests.services import daphne, require_postgres, require_redis, subprocess_env
from tests.wsclient import (
    HTTP_TIMEOUT,
    Frame,
    api_post,
    connect,
    of_type,
    recv_json,
    recv_until,
    run_then_flush,
    sign_in,
    subscribe,
    usable_by_daphne,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@dataclass
class Talk:
    slug: str
    alice: User
    bob: User
    room: Room

    @property
    def stream(self) -> str:
        return f"room.{self.room.id}"

    @property
    def messages_path(self) -> str:
        return f"/{self.slug}/api/talk/rooms/{self.room.id}/messages/"


def talk_user(organization: Any, login_id: str) -> User:
    """A talk user whose password daphne (the base settings' hashers) can verify."""
    return usable_by_daphne(factories.person(organization, login_id, talk_available=True))


def make_talk(slug: str) -> Talk:
    organization = factories.organization(slug=slug, name=f"{slug} 株式会社")
    alice, bob = talk_user(organization, f"{slug}-alice"), talk_user(organization, f"{slug}-bob")
    room = services.room_group_create(creator=alice, name="防災チーム", member_ids=[bob.id])
    return Talk(slug, alice, bob, room)


def servers_env() -> dict[str, str]:
    # Eager tasks: no Celery worker runs here, so nothing may be left queued in Redis. A generous send rate: the
    # throttle counts in the shared Redis cache, where an earlier run's counts for the same ids may linger.
    return subprocess_env(CELERY_TASK_ALWAYS_EAGER="true", TALK_SEND_RATE_PER_MINUTE="10000")


async def send(base_url: str, talk: Talk, cookies: Mapping[str, str], body: str) -> Frame:
    status, data = await api_post(base_url, talk.messages_path, cookies, {"body": body})
    assert status == 201, f"POST message to {base_url}: {status} {str(data)[:500]}"
    assert isinstance(data, dict)
    return data


async def next_message(ws: ClientConnection, stream: str, timeout: float = 10) -> Frame:
    return await recv_until(ws, lambda f: f.get("type") == "event" and f.get("stream") == stream, timeout)


async def nothing_more(ws: ClientConnection, seconds: float = 0.5) -> None:
    try:
        frame = await recv_json(ws, seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected extra frame: {frame}")


@pytest.mark.timeout(120)
def test_message_sent_to_either_process_reaches_members_on_both() -> None:
    require_redis()
    require_postgres()
    talk = make_talk("talk2p")
    env = servers_env()
    with daphne(env) as server_1, daphne(env) as server_2:
        run_then_flush(cross_process(talk, server_1, server_2))


async def cross_process(talk: Talk, server_1: str, server_2: str) -> None:
    alice_cookies = await sign_in(server_1, talk.slug, talk.alice.login_id, factories.PASSWORD)
    bob_cookies = await sign_in(server_2, talk.slug, talk.bob.login_id, factories.PASSWORD)
    async with (
        connect(server_1, talk.slug, alice_cookies) as alice_ws,
        connect(server_2, talk.slug, bob_cookies) as bob_ws,
    ):
        snapshots = [await subscribe(alice_ws, talk.stream, None), await subscribe(bob_ws, talk.stream, None)]
        assert [s["type"] for s in snapshots] == ["snapshot", "snapshot"]
        seq = snapshots[0]["seq"]
        assert snapshots[1]["seq"] == seq

        # Alice (on process 1) sends through process 2; then Bob (on process 2) sends through process 1.
        first = await send(server_2, talk, alice_cookies, "一報: 本社は全員無事")
        for ws in (alice_ws, bob_ws):
            event = await next_message(ws, talk.stream)
            assert (event["event"], event["seq"], event["data"]) == ("message.posted", seq + 1, first)
        second = await send(server_1, talk, bob_cookies, "了解")
        for ws in (alice_ws, bob_ws):
            event = await next_message(ws, talk.stream)
            assert (event["event"], event["seq"], event["data"]["id"]) == ("message.posted", seq + 2, second["id"])
        await nothing_more(alice_ws)
        await nothing_more(bob_ws)
        last_seen = seq + 2

    # Bob loses his connection; Alice sends three more through process 2; Bob comes back on process 1.
    missed = [await send(server_2, talk, alice_cookies, f"不在中 {n}") for n in range(3)]
    bob_cookies_1 = await sign_in(server_1, talk.slug, talk.bob.login_id, factories.PASSWORD)
    async with connect(server_1, talk.slug, bob_cookies_1) as bob_ws:
        await recv_until(bob_ws, of_type("hello"))
        await bob_ws.send(json.dumps({"type": "subscribe", "stream": talk.stream, "last_seq": last_seen}))
        replayed = [await recv_json(bob_ws, 10) for _ in range(3)]
        assert [f["seq"] for f in replayed] == [last_seen + 1, last_seen + 2, last_seen + 3]
        assert [f["data"]["id"] for f in replayed] == [m["id"] for m in missed]
        assert await recv_json(bob_ws, 10) == {"type": "subscribed", "stream": talk.stream, "seq": last_seen + 3}
        await nothing_more(bob_ws)


BURST = 50


@pytest.mark.timeout(180)
def test_burst_of_messages_reaches_both_processes_gap_free_and_once() -> None:
    require_redis()
    require_postgres()
    talk = make_talk("talkburst")
    env = servers_env()
    with daphne(env) as server_1, daphne(env) as server_2:
        run_then_flush(burst(talk, server_1, server_2))


async def burst(talk: Talk, server_1: str, server_2: str) -> None:
    cookies = {
        (talk.alice.login_id, server_1): await sign_in(server_1, talk.slug, talk.alice.login_id, factories.PASSWORD),
        (talk.alice.login_id, server_2): await sign_in(server_2, talk.slug, talk.alice.login_id, factories.PASSWORD),
        (talk.bob.login_id, server_1): await sign_in(server_1, talk.slug, talk.bob.login_id, factories.PASSWORD),
        (talk.bob.login_id, server_2): await sign_in(server_2, talk.slug, talk.bob.login_id, factories.PASSWORD),
    }
    alice_socket = connect(server_1, talk.slug, cookies[(talk.alice.login_id, server_1)])
    bob_socket = connect(server_2, talk.slug, cookies[(talk.bob.login_id, server_2)])
    async with alice_socket as alice_ws, bob_socket as bob_ws:
        seq = (await subscribe(alice_ws, talk.stream, None))["seq"]
        assert (await subscribe(bob_ws, talk.stream, None))["seq"] == seq

        async def one(n: int) -> Frame:
            sender = talk.alice.login_id if n % 2 else talk.bob.login_id
            server = server_1 if n % 4 < 2 else server_2
            return await send(server, talk, cookies[(sender, server)], f"burst {n}")

        posted = await asyncio.gather(*(one(n) for n in range(BURST)))
        posted_ids = {m["id"] for m in posted}
        assert len(posted_ids) == BURST

        for name, ws in (("alice", alice_ws), ("bob", bob_ws)):
            frames = [await next_message(ws, talk.stream, timeout=30) for _ in range(BURST)]
            assert [f["seq"] for f in frames] == list(range(seq + 1, seq + BURST + 1)), name
            assert all(f["event"] == "message.posted" for f in frames), name
            ids = [f["data"]["id"] for f in frames]
            assert len(set(ids)) == BURST and set(ids) == posted_ids, name
            assert ids == sorted(ids), f"{name}: messages out of id order"  # ids follow commit order per room
            await nothing_more(ws)


async def api_get(base_url: str, path: str, cookies: Mapping[str, str]) -> tuple[int, Any]:
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()), "Accept": "application/json"}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=HTTP_TIMEOUT) as http,
        http.get(f"{base_url}{path}", headers=headers) as response,
    ):
        return response.status, await response.json()


@pytest.mark.timeout(120)
def test_person_connected_to_two_processes_stays_online_when_one_socket_closes() -> None:
    """Bob has the app open on his phone (process 2) and closes it on his laptop (process 1): he is still
    connected, so he must still count as online (no web push for what his phone shows live)."""
    require_redis()
    require_postgres()
    talk = make_talk("talkpresence")
    env = servers_env()
    with daphne(env) as server_1, daphne(env) as server_2:
        run_then_flush(presence_across_processes(talk, server_1, server_2))


async def presence_across_processes(talk: Talk, server_1: str, server_2: str) -> None:
    alice_cookies = await sign_in(server_1, talk.slug, talk.alice.login_id, factories.PASSWORD)
    bob_1 = await sign_in(server_1, talk.slug, talk.bob.login_id, factories.PASSWORD)
    bob_2 = await sign_in(server_2, talk.slug, talk.bob.login_id, factories.PASSWORD)
    presence_path = f"/{talk.slug}/api/talk/presence/?ids={talk.bob.id}"
    key = str(talk.bob.id)

    async def bob_online() -> bool:
        status, body = await api_get(server_1, presence_path, alice_cookies)
        assert status == 200, body
        return bool(body[key])

    async with connect(server_2, talk.slug, bob_2) as phone:
        await recv_until(phone, of_type("hello"))
        async with connect(server_1, talk.slug, bob_1) as laptop:
            await recv_until(laptop, of_type("hello"))
            assert await bob_online()
        # The laptop's socket is closed; the phone's is still open.
        for _ in range(10):
            await asyncio.sleep(0.2)
            assert await bob_online(), "bob counts as offline while his phone is connected"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await bob_online():
        assert loop.time() < deadline, "bob still counts as online after closing every socket"
        await asyncio.sleep(0.2)
