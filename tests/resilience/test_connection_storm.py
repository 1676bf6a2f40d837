"""Issue 10, fault 5: a connection storm. 1,000 WebSockets connect at once to one daphne, idle for 60 s, all
receive one event, and close normally: no HTTP 500, no handshake refused, no abnormal close.

1,000 people of one organisation are signed in (session rows written in bulk). Each opens the live socket
`/<slug>/ws/` at the same moment (one aiohttp session, no connector limit) and subscribes to the organisation's
stream, as every page of the PWA does on open. The sockets then say nothing for 60 s: only daphne's keepalive
pings (every 20 s) and aiohttp's automatic pongs cross them. An administrator then posts a notice through the
REST API, and every socket must receive it. The channel layer and cache are a private Redis, so its client count
can be read; the test prints it, the handshake times and daphne's open files and memory.

Needs about 2,100 file descriptors in this process (1,000 client sockets) and as many in daphne (1,000 server
sockets, Redis and PostgreSQL connections): the test raises its soft RLIMIT_NOFILE to the hard limit, which
daphne inherits, and fails with a clear message when the hard limit is too low."""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connections
from django.utils import timezone
from django.utils.crypto import get_random_string

from bench._answers_data import departments_create, people_create
from directory.events import org_group
from directory.models import Organization, Role, User
from tests import factories
from tests.resilience.instances import PrivateRedis
from tests.services import DAPHNE_ARGS, daphne, require_postgres, require_redis, subprocess_env
from tests.wsclient import cookie_header, post_notice, ws_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(420)]

SLUG = "acme"
SOCKETS = 1000
IDLE_SECONDS = 60
# daphne's own defaults, written out: a keepalive ping after 20 s of silence, closed if no pong within 30 s.
PING = ("--ping-interval", "20", "--ping-timeout", "30")
NOFILE_NEEDED = SOCKETS * 2 + 500
CONNECT_SECONDS = 120  # for all 1,000 handshakes and subscriptions on a busy 2-core machine
DELIVERY_SECONDS = 60
NORMAL_CLOSES = (1000, 1001)


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (daphne, started after, inherits it); returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < NOFILE_NEEDED:
        pytest.fail(
            f"RLIMIT_NOFILE hard limit {hard} is below the {NOFILE_NEEDED} this test needs: raise it"
            " (`ulimit -Hn`, LimitNOFILE= for systemd, --ulimit nofile= for docker)"
        )
    return soft, target


def signed_in_sessions(users: list[User]) -> list[str]:
    """A session row per person, as a sign-in leaves it (written in bulk); returns their keys."""
    store = SessionStore()
    expires = timezone.now() + timedelta(hours=2)
    keys, rows = [], []
    for user in users:
        data = {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "directory.auth.OrganisationLoginBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
        }
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expires))
        keys.append(key)
    Session.objects.bulk_create(rows, batch_size=1000)
    return keys


def daphne_pid(port: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"daphne" in b" ".join(cmdline) and port.encode() in cmdline:
            return int(proc.name)
    return None


def process_usage(pid: int | None) -> tuple[int, int]:
    """(open file descriptors, resident memory in MB) of a process; (-1, -1) when it cannot be read."""
    if pid is None:
        return -1, -1
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS")
        )
    except (OSError, StopIteration, ValueError):
        return -1, -1
    return fds, rss_kb // 1024


def redis_clients(redis: PrivateRedis) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "info", "clients"], capture_output=True, text=True, timeout=10
    ).stdout
    for line in out.splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1])
    return -1


@dataclass
class Socket:
    ws: aiohttp.ClientWebSocketResponse | None = None
    handshake: int | str = 0  # 101, the refused status, or the error's name
    handshake_seconds: float = 0.0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    notice: asyncio.Event = field(default_factory=asyncio.Event)
    notice_id: int | None = None
    closed_at: float | None = None
    close_code: int | None = None
    errors: list[str] = field(default_factory=list)


async def wait_all(events: list[asyncio.Event], timeout: float) -> None:
    """Until every event is set or `timeout` seconds have passed (the caller counts which were)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    if waiters:
        _, pending = await asyncio.wait(waiters, timeout=timeout)
        for waiter in pending:
            waiter.cancel()


async def follow(sock: Socket, stream: str) -> None:
    """Read one socket's frames until it closes: the subscription's answer, then the notice."""
    assert sock.ws is not None
    async for message in sock.ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        frame: dict[str, Any] = message.json()
        if frame.get("type") == "subscribed" and frame.get("stream") == stream:
            sock.subscribed.set()
        elif frame.get("type") == "error":
            sock.errors.append(str(frame))
        elif (
            frame.get("type") == "event"
            and frame.get("event") == "notice.posted"
            and (sock.notice_id is None or frame["data"].get("id") == sock.notice_id)
        ):
            sock.notice.set()
    sock.closed_at = time.monotonic()
    sock.close_code = sock.ws.close_code


def test_a_thousand_sockets_connect_at_once_idle_a_minute_receive_an_event_and_close_normally() -> None:
    require_postgres()
    require_redis()
    nofile_before, nofile = raise_nofile()
    org = Organization.objects.create(slug=SLUG, name="ACME株式会社")
    ids = people_create(org, SOCKETS, departments_create(org, 10))
    members = list(User.objects.filter(id__in=ids))
    admin = factories.person(org, "admin", roles=(Role.SYSTEM_ADMIN,))
    keys = signed_in_sessions(members)
    admin_key = signed_in_sessions([admin])[0]
    stream = org_group(org.id)
    connections.close_all()
    redis = PrivateRedis()
    redis.start()
    try:
        env = subprocess_env(REDIS_URL=redis.url, CELERY_TASK_ALWAYS_EAGER="true")
        env.pop("CHANNEL_REDIS_URLS", None)
        with daphne(env, args=(*DAPHNE_ARGS, *PING, "--access-log", os.devnull)) as base:
            pid = daphne_pid(base.rsplit(":", 1)[1])
            report = asyncio.run(_storm(base, keys, admin_key, stream, redis, pid))
            report["nofile"] = f"{nofile_before} -> {nofile}"
            print("\nstorm:", report)
            _check(report)
    finally:
        redis.stop()


def _check(report: dict[str, Any]) -> None:
    handshakes: Counter[int | str] = report["handshakes"]
    assert not [s for s in handshakes if isinstance(s, int) and s >= 500], f"HTTP 5xx in the handshakes: {handshakes}"
    assert handshakes == Counter({101: SOCKETS}), f"not every handshake was accepted: {handshakes}"
    assert report["subscribed"] == SOCKETS, report
    assert report["stream_errors"] == [], report["stream_errors"][:5]
    assert report["closed_while_idle"] == {}, f"sockets closed during the idle minute: {report['closed_while_idle']}"
    assert report["received_notice"] == SOCKETS, report
    abnormal = {code: n for code, n in report["close_codes"].items() if code not in NORMAL_CLOSES}
    assert abnormal == {}, f"abnormal close codes: {abnormal}"


async def _storm(
    base: str, keys: list[str], admin_key: str, stream: str, redis: PrivateRedis, pid: int | None
) -> dict[str, Any]:
    url = ws_url(base, f"/{SLUG}/ws/")
    sockets = [Socket() for _ in keys]
    readers: list[asyncio.Task[None]] = []
    report: dict[str, Any] = {}
    peak_redis = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak_redis
        while sampling:
            peak_redis = max(peak_redis, await asyncio.to_thread(redis_clients, redis))
            await asyncio.sleep(0.5)

    async def open_one(http: aiohttp.ClientSession, sock: Socket, key: str) -> None:
        started = time.monotonic()
        try:
            sock.ws = await http.ws_connect(
                url,
                headers={"Origin": base, "Cookie": cookie_header({"sessionid": key})},
                autoping=True,
                heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=30),
            )
        except aiohttp.WSServerHandshakeError as error:
            sock.handshake = error.status
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            sock.handshake = type(error).__name__
            return
        sock.handshake, sock.handshake_seconds = 101, time.monotonic() - started
        readers.append(asyncio.ensure_future(follow(sock, stream)))
        # As app.js does on open: subscribe to the stream (null: a snapshot first).
        await sock.ws.send_json({"type": "subscribe", "stream": stream, "last_seq": None})

    sampler = asyncio.ensure_future(sample())
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        try:
            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(*(open_one(http, s, k) for s, k in zip(sockets, keys, strict=True))),
                CONNECT_SECONDS,
            )
            report["connect_all_s"] = round(time.monotonic() - started, 1)
            opened = [s for s in sockets if s.ws is not None]
            await asyncio.wait(
                [asyncio.ensure_future(s.subscribed.wait()) for s in opened]
                or [asyncio.ensure_future(asyncio.sleep(0))],
                timeout=max(1.0, CONNECT_SECONDS - (time.monotonic() - started)),
            )
            report["subscribe_all_s"] = round(time.monotonic() - started, 1)
            report["handshakes"] = Counter(s.handshake for s in sockets)
            report["subscribed"] = sum(s.subscribed.is_set() for s in sockets)
            latencies = sorted(s.handshake_seconds for s in opened) or [0.0]
            report["handshake_s"] = {
                "p50": round(statistics.median(latencies), 2),
                "p95": round(latencies[int(len(latencies) * 0.95) - 1], 2),
                "max": round(latencies[-1], 2),
            }
            report["daphne_fds_mb_after_connect"] = process_usage(pid)

            # The idle minute: nothing from the clients; daphne pings, aiohttp answers.
            idle_from = time.monotonic()
            await asyncio.sleep(IDLE_SECONDS)
            report["closed_while_idle"] = dict(Counter(s.close_code for s in opened if s.closed_at is not None))
            report["daphne_fds_mb_after_idle"] = process_usage(pid)
            report["idle_s"] = round(time.monotonic() - idle_from, 1)

            # One event for everyone: a notice posted through the REST API by an administrator.
            admin = {"sessionid": admin_key, "csrftoken": get_random_string(32)}
            posted_at = time.monotonic()
            notice = await post_notice(base, SLUG, admin, "全員: 本日は在宅勤務です")
            for s in opened:
                s.notice_id = notice["id"]
            await wait_all([s.notice for s in opened], DELIVERY_SECONDS)
            report["notice_to_all_s"] = round(time.monotonic() - posted_at, 2)
            report["received_notice"] = sum(s.notice.is_set() for s in opened)
            report["stream_errors"] = [e for s in opened for e in s.errors]
        finally:
            sampling = False
            # Close normally, as a page being left does (aiohttp hands the reader the close, then reads the reply).
            await asyncio.gather(*(s.ws.close() for s in sockets if s.ws is not None), return_exceptions=True)
            await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 60)
            await sampler
    # The code of the server's close frame: its answer to ours, or what it sent first.
    report["close_codes"] = dict(Counter(s.ws.close_code for s in sockets if s.ws is not None))
    report["peak_redis_clients"] = peak_redis
    return report
