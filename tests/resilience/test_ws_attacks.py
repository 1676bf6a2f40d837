"""WebSocket attacks against a real daphne (issue 10, item 9): a foreign Origin, no session, an expired (or
deleted) session, and a subscription to another organisation's board, by its ids and by its slug, are all
rejected; and a valid session of the organisation is let in, so each refusal is the attack's, not the setup's.

One daphne process serves every attack (config.asgi: AllowedHostsOriginValidator › AuthMiddlewareStack ›
LiveConsumer). The sockets are aiohttp's, as a browser's would be, with the cookie and Origin set by hand.
Sessions are made in the test process with `force_login` (daphne shares the database and the secret key in
STATE_DIR), and the expired one is expired in the database, before the event loop starts: the ORM is used only
outside it (tests/consumers/test_multiprocess.py says why).

Rejected means: the handshake answered 403 (Origin); or the socket closed with 4401 (no session) or 4404 (an
organisation the person is not in) before any frame; or the subscription answered `not_found` and the socket
then got nothing of that stream, not even when the other organisation's board moved (an instruction posted
there reaches that organisation's own socket, which proves the event went out)."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from directory.models import Department, Organization, Role, User
from safety import services as safety_services
from safety.models import Incident
from tests import factories
from tests.services import daphne, require_postgres, require_redis, subprocess_env
from tests.wsclient import api_post, run_then_flush

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

TIMEOUT = 30  # seconds for a handshake or an awaited frame on a busy machine
QUIET = 3  # seconds a refused socket is watched for frames it must not get
THEIR_MARKER = "qzbravo-ws"


@dataclass
class Side:
    organization: Organization
    admin: User  # crisis manager and safety administrator: reads the organisation's boards
    incident: Incident
    department: Department

    @property
    def slug(self) -> str:
        return self.organization.slug


def make_side(slug: str, marker: str) -> Side:
    organization = factories.organization(slug=slug, name=f"{slug} 株式会社")
    department = factories.department(organization, "SALES")
    admin = factories.person(
        organization,
        f"{slug}-admin",
        roles=(Role.CRISIS_MANAGER, Role.ADMIN_ANPI),
        department=department,
        anpi_login_id=f"anpi-{slug}",
    )
    admin.last_name = f"{marker}姓"
    admin.save(update_fields=["last_name"])
    incident = safety_services.incident_create(
        organization=organization, actor=admin, title=f"{marker} 地震", message=f"{marker} 回答してください"
    )
    dispatch = safety_services.dispatch_create(incident=incident, actor=admin, target={"mode": "everyone"})
    safety_services.dispatch_run(dispatch_id=dispatch.id)
    return Side(organization, admin, incident, department)


def session_cookies(user: User) -> dict[str, str]:
    """A session as signing in makes it, and a CSRF cookie (a fresh secret: the REST API compares cookie and
    header)."""
    client = Client()
    client.force_login(user, backend="directory.auth.OrganisationLoginBackend")
    return {"sessionid": client.cookies["sessionid"].value, "csrftoken": secrets.token_hex(16)}


@dataclass
class Setup:
    ours: Side
    theirs: Side
    valid: dict[str, str]  # our administrator's session
    expired: dict[str, str]  # another session of theirs, its expiry date in the past
    deleted: dict[str, str]  # another session of theirs, gone from the database (signed out elsewhere)
    their_admin: dict[str, str]


@pytest.mark.timeout(240)
def test_foreign_origin_no_session_expired_session_and_another_organisations_board_are_rejected() -> None:
    require_redis()
    require_postgres()
    ours, theirs = make_side("wsa", "qzalpha-ws"), make_side("wsb", THEIR_MARKER)
    expired, deleted = session_cookies(ours.admin), session_cookies(ours.admin)
    Session.objects.filter(session_key=expired["sessionid"]).update(expire_date=timezone.now() - timedelta(seconds=1))
    Session.objects.filter(session_key=deleted["sessionid"]).delete()
    setup = Setup(ours, theirs, session_cookies(ours.admin), expired, deleted, session_cookies(theirs.admin))
    with daphne(subprocess_env()) as server:
        run_then_flush(attacks(server, setup))


# --- the client side ------------------------------------------------------------------------------------------


def ws_url(server: str, slug: str) -> str:
    return server.replace("http://", "ws://", 1) + f"/{slug}/ws/"


def headers(cookies: dict[str, str] | None, origin: str | None) -> dict[str, str]:
    found = {}
    if origin is not None:
        found["Origin"] = origin
    if cookies:
        found["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return found


async def refused_handshake(http: aiohttp.ClientSession, url: str, head: dict[str, str]) -> int:
    """The HTTP status the handshake was refused with; fails if the socket opened."""
    try:
        ws = await http.ws_connect(url, headers=head, timeout=aiohttp.ClientWSTimeout(ws_receive=TIMEOUT))
    except aiohttp.WSServerHandshakeError as refused:
        return refused.status
    await ws.close()
    raise AssertionError(f"the handshake with {head} was accepted")


async def closed_before_any_frame(http: aiohttp.ClientSession, url: str, head: dict[str, str]) -> int:
    """The close code of a socket that the server closes at once; fails on any data frame first."""
    async with http.ws_connect(url, headers=head) as ws:
        await ws.send_str(json.dumps({"type": "subscribe", "stream": "jma.all", "last_seq": None}))
        message = await ws.receive(timeout=TIMEOUT)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (
            f"a frame before the close: {message.type} {str(message.data)[:300]}"
        )
        return int(ws.close_code or 0)


async def frame(ws: aiohttp.ClientWebSocketResponse, want: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame for which `want(frame)` holds (other streams' frames are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await ws.receive(timeout=max(0.1, deadline - loop.time()))
        assert message.type == aiohttp.WSMsgType.TEXT, f"{message.type} {message.data!r} (close {ws.close_code})"
        data = json.loads(message.data)
        if want(data):
            return dict(data)


async def subscribe(ws: aiohttp.ClientWebSocketResponse, stream: str) -> dict[str, Any]:
    """The answer to a subscription: its snapshot or its error."""
    await ws.send_str(json.dumps({"type": "subscribe", "stream": stream, "last_seq": None}))
    return await frame(ws, lambda f: f.get("stream") == stream and f["type"] in ("snapshot", "error"))


async def frames_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """Every frame the socket gets in `seconds`."""
    got: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            message = await ws.receive(timeout=left)
        except TimeoutError:
            break
        assert message.type == aiohttp.WSMsgType.TEXT, f"{message.type} (close {ws.close_code})"
        got.append(json.loads(message.data))
    return got


# --- the attacks ----------------------------------------------------------------------------------------------


async def attacks(server: str, s: Setup) -> None:
    ours_url, theirs_url = ws_url(server, s.ours.slug), ws_url(server, s.theirs.slug)
    own_origin = server
    our_board = f"board.{s.ours.incident.id}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        # The valid session from the site's own Origin is let in, and reads its own board: the control.
        ws = await http.ws_connect(ours_url, headers=headers(s.valid, own_origin))
        hello = await frame(ws, lambda f: f["type"] == "hello")
        assert hello["user"] == s.ours.admin.id
        snapshot = await subscribe(ws, our_board)
        assert snapshot["type"] == "snapshot", snapshot
        await frame(ws, lambda f: f["type"] == "subscribed" and f["stream"] == our_board)

        # 1. A foreign Origin, with the valid session: refused at the handshake. So are a look-alike host, the
        # opaque origin "null" (sandboxed frames, file://) and none at all (not a browser).
        for origin in ("https://evil.example", "http://127.0.0.1.evil.example", "null", None):
            status = await refused_handshake(http, ours_url, headers(s.valid, origin))
            assert status == 403, (origin, status)

        # 2. No session (no cookie, or a session id that was never issued): closed 4401 before any frame.
        assert await closed_before_any_frame(http, ours_url, headers(None, own_origin)) == 4401
        forged = {"sessionid": secrets.token_hex(16)}
        assert await closed_before_any_frame(http, ours_url, headers(forged, own_origin)) == 4401

        # 3. An expired session, and one deleted at sign-out elsewhere: closed 4401, as the REST API refuses them.
        for stale in (s.expired, s.deleted):
            assert await closed_before_any_frame(http, ours_url, headers(stale, own_origin)) == 4401
            async with http.get(f"{server}/{s.ours.slug}/api/me/", headers=headers(stale, own_origin)) as response:
                assert response.status == 403, response.status

        # 4a. Another organisation's board by its slug: our valid session on their socket is closed 4404.
        assert await closed_before_any_frame(http, theirs_url, headers(s.valid, own_origin)) == 4404

        # 4b. ... and by its ids on our own socket: the whole board, a department's board, our incident with
        # their department, and their organisation's stream are not found.
        their_board = f"board.{s.theirs.incident.id}"
        for stream in (
            their_board,
            f"board.{s.theirs.incident.id}-{s.theirs.department.id}",
            f"board.{s.ours.incident.id}-{s.theirs.department.id}",
            f"org.{s.theirs.organization.id}",
        ):
            answer = await subscribe(ws, stream)
            assert answer["type"] == "error" and answer["code"] == "not_found", (stream, answer)

        # Their board moves: their own socket gets the instruction, ours gets nothing of their stream.
        theirs = await http.ws_connect(theirs_url, headers=headers(s.their_admin, own_origin))
        await frame(theirs, lambda f: f["type"] == "hello")
        assert (await subscribe(theirs, their_board))["type"] == "snapshot"
        await frame(theirs, lambda f: f["type"] == "subscribed" and f["stream"] == their_board)
        status, posted = await api_post(
            server,
            f"/{s.theirs.slug}/api/safety/incidents/{s.theirs.incident.id}/instructions/",
            s.their_admin,
            {"body": f"{THEIR_MARKER} 待機してください"},
        )
        assert status == 201, (status, posted)
        event = await frame(theirs, lambda f: f["type"] == "event" and f["stream"] == their_board)
        assert THEIR_MARKER in json.dumps(event, ensure_ascii=False)
        leaked = [f for f in await frames_for(ws, QUIET) if THEIR_MARKER in json.dumps(f, ensure_ascii=False)]
        assert not leaked, leaked
        # Our socket is alive, so the silence was the refusal's.
        await ws.send_str(json.dumps({"type": "ping"}))
        await frame(ws, lambda f: f["type"] == "pong")
        await theirs.close()
        await ws.close()
