"""The live connection over real daphne processes sharing Redis and PostgreSQL: an event crosses from one
process to a socket on another, an idle socket survives, a burst of connects gets no HTTP 500, and a
foreign Origin is refused at the handshake.

The daphne subprocesses read committed data only, hence transactional tests; they share the test run's
channel-layer prefix through `subprocess_env()`. The tests are synchronous and drive their sockets with
`asyncio.run`: the ORM is used only outside the event loop, on the connection pytest-django manages (a
connection opened inside an async test belongs to that task's context and is never closed, which keeps
PostgreSQL from dropping the test database at the end of the run)."""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from directory.models import Organization, Role, User
from tests import factories
from tests.services import daphne, require_postgres, require_redis, subprocess_env
from tests.wsclient import (
    connect,
    of_type,
    post_notice,
    recv_until,
    run_then_flush,
    sign_in,
    subscribe,
    usable_by_daphne,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@dataclass
class Org:
    organization: Organization
    admin: User
    member: User

    @property
    def slug(self) -> str:
        return self.organization.slug

    @property
    def stream(self) -> str:
        return f"org.{self.organization.id}"


def make_org(slug: str) -> Org:
    organization = factories.organization(slug=slug, name=f"{slug} 株式会社")
    admin = factories.person(organization, f"{slug}-admin", roles=(Role.SYSTEM_ADMIN,))
    member = factories.person(organization, f"{slug}-member")
    return Org(organization, usable_by_daphne(admin), usable_by_daphne(member))


@pytest.mark.timeout(90)
def test_event_published_through_one_daphne_reaches_a_socket_on_another() -> None:
    require_redis()
    require_postgres()
    org = make_org("multi")
    env = subprocess_env()
    with daphne(env) as server_a, daphne(env) as server_b:
        assert server_a != server_b
        run_then_flush(cross_process_event(org, server_a, server_b))


async def cross_process_event(org: Org, server_a: str, server_b: str) -> None:
    member_cookies = await sign_in(server_b, org.slug, org.member.login_id, factories.PASSWORD)
    admin_cookies = await sign_in(server_a, org.slug, org.admin.login_id, factories.PASSWORD)
    async with connect(server_b, org.slug, member_cookies) as ws:
        snapshot = await subscribe(ws, org.stream, None)
        assert snapshot["type"] == "snapshot"
        assert snapshot["stream"] == org.stream

        started = time.perf_counter()
        notice = await post_notice(server_a, org.slug, admin_cookies, "避難訓練のお知らせ", "10時から")
        answered = time.perf_counter()
        event = await recv_until(ws, of_type("event", stream=org.stream), timeout=10)
        arrived = time.perf_counter()

    assert event["event"] == "notice.posted"
    assert event["seq"] == snapshot["seq"] + 1
    assert event["data"]["title"] == "避難訓練のお知らせ"
    assert event["data"]["id"] == notice["id"]
    print(
        f"\n[A→B] POST through daphne A → event on a socket on daphne B: {(arrived - started) * 1000:.1f} ms "
        f"(POST answered after {(answered - started) * 1000:.1f} ms; "
        f"event arrived {(arrived - answered) * 1000:.1f} ms after the answer)"
    )


@pytest.mark.timeout(150)
def test_socket_idle_for_60_seconds_stays_open() -> None:
    require_redis()
    require_postgres()
    org = make_org("idle")
    with daphne(subprocess_env()) as server:
        run_then_flush(idle_socket(org, server, idle_seconds=65))


async def idle_socket(org: Org, server: str, idle_seconds: float) -> None:
    member_cookies = await sign_in(server, org.slug, org.member.login_id, factories.PASSWORD)
    admin_cookies = await sign_in(server, org.slug, org.admin.login_id, factories.PASSWORD)
    # ping_interval=None: the client sends no keepalive of its own. (It still answers daphne's pings, as a
    # browser does; those do not touch the channel layer.)
    async with connect(server, org.slug, member_cookies, ping_interval=None) as ws:
        snapshot = await subscribe(ws, org.stream, None)
        idle_from = time.perf_counter()
        try:
            frame = await asyncio.wait_for(ws.recv(), idle_seconds)
        except TimeoutError:
            pass
        except ConnectionClosed as exc:
            pytest.fail(
                f"the socket closed after {time.perf_counter() - idle_from:.1f} s idle: "
                f"code {exc.rcvd.code if exc.rcvd else None} ({exc})"
            )
        else:
            pytest.fail(f"an idle socket received {frame!r}")
        print(f"\n[idle] socket idle for {time.perf_counter() - idle_from:.1f} s and still open")

        await ws.send(json.dumps({"type": "ping"}))
        await recv_until(ws, of_type("pong"), timeout=10)

        started = time.perf_counter()
        await post_notice(server, org.slug, admin_cookies, "待機後のお知らせ")
        event = await recv_until(ws, of_type("event", stream=org.stream), timeout=10)
        took = time.perf_counter() - started
        print(f"[idle] a notice posted after the idle period arrived in {took * 1000:.1f} ms")
    assert event["event"] == "notice.posted"
    assert event["seq"] == snapshot["seq"] + 1
    assert event["data"]["title"] == "待機後のお知らせ"


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, 65536) if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        return f"closed {exc.rcvd.code if exc.rcvd else 'without a close frame'}"
    return f"{type(exc).__name__}: {exc}"[:200]


SOCKETS_AT_ONCE = 500


@pytest.mark.timeout(180)
def test_500_sockets_connecting_at_once_get_no_http_500() -> None:
    require_redis()
    require_postgres()
    limit = raise_open_files_limit()
    # Each socket is a file here, and one in daphne (a child: it inherits the raised limit).
    assert limit >= SOCKETS_AT_ONCE + 200, f"open-files limit {limit} is too low for {SOCKETS_AT_ONCE} sockets"
    org = make_org("burst")
    with daphne(subprocess_env()) as server:
        run_then_flush(burst(org, server, SOCKETS_AT_ONCE))


async def burst(org: Org, server: str, count: int) -> None:
    # One person signed in once; every socket carries the same session cookie.
    member_cookies = await sign_in(server, org.slug, org.member.login_id, factories.PASSWORD)
    admin_cookies = await sign_in(server, org.slug, org.admin.login_id, factories.PASSWORD)
    handshake_times: list[float] = []
    subscribed_times: list[float] = []

    async def open_and_subscribe() -> tuple[ClientConnection, int]:
        started = time.perf_counter()
        # A generous client-side limit: it is daphne's own handshake timeout that is under test.
        ws = await connect(server, org.slug, member_cookies, ping_interval=None, open_timeout=60)
        handshake_times.append(time.perf_counter() - started)
        try:
            snapshot = await subscribe(ws, org.stream, None, timeout=60)
        except BaseException:
            await ws.close()
            raise
        subscribed_times.append(time.perf_counter() - started)
        return ws, snapshot["seq"]

    started = time.perf_counter()
    results = await asyncio.gather(*(open_and_subscribe() for _ in range(count)), return_exceptions=True)
    took = time.perf_counter() - started
    opened = [r for r in results if not isinstance(r, BaseException)]
    failures = Counter(describe_failure(r) for r in results if isinstance(r, BaseException))
    print(f"\n[burst] {len(opened)}/{count} sockets connected and subscribed in {took:.2f} s")
    for label, times in (("handshake", handshake_times), ("handshake to subscribed", subscribed_times)):
        if times:
            print(f"[burst]   {label}: median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    try:
        assert not failures, f"{failures.total()} of {count} sockets failed: {dict(failures)}"
        assert len(opened) == count
        seqs = {seq for _, seq in opened}
        assert len(seqs) == 1, f"the snapshots disagree on the stream's seq: {sorted(seqs)}"
        seq = seqs.pop()

        started = time.perf_counter()
        await post_notice(server, org.slug, admin_cookies, "全員へのお知らせ")
        events = await asyncio.gather(
            *(recv_until(ws, of_type("event", stream=org.stream), timeout=30) for ws, _ in opened),
            return_exceptions=True,
        )
        took = time.perf_counter() - started
        received = [e for e in events if not isinstance(e, BaseException)]
        missed = Counter(describe_failure(e) for e in events if isinstance(e, BaseException))
        print(f"[burst] one notice reached {len(received)}/{len(opened)} sockets in {took * 1000:.0f} ms")
        assert not missed, f"{missed.total()} sockets missed the event: {dict(missed)}"
        assert all(e["event"] == "notice.posted" and e["seq"] == seq + 1 for e in received)
        assert all(e["data"]["title"] == "全員へのお知らせ" for e in received)
    finally:
        started = time.perf_counter()
        await asyncio.gather(*(ws.close() for ws, _ in opened), return_exceptions=True)
        print(f"[burst] closed {len(opened)} sockets in {(time.perf_counter() - started) * 1000:.0f} ms")
    unclean = Counter(ws.close_code for ws, _ in opened if ws.close_code != 1000)
    assert not unclean, f"sockets that did not close cleanly, by close code: {dict(unclean)}"


@pytest.mark.timeout(60)
def test_foreign_origin_is_rejected_over_real_daphne() -> None:
    require_redis()
    require_postgres()
    org = make_org("origin")
    with daphne(subprocess_env()) as server:
        run_then_flush(foreign_origin(org, server))


async def foreign_origin(org: Org, server: str) -> None:
    cookies = await sign_in(server, org.slug, org.member.login_id, factories.PASSWORD)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server, org.slug, cookies, origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    # The same session from the site's own origin is let in: it was the Origin that was refused.
    async with connect(server, org.slug, cookies) as ws:
        hello = await recv_until(ws, of_type("hello"), timeout=10)
    assert hello["user"] == org.member.id
