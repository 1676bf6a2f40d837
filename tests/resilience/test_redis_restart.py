"""Issue 10, fault 2: Redis restarts in the middle of a burst of answers, and nothing is lost.

A real daphne serves the project with a private Redis (tests/resilience/instances.py) as its channel layer and
cache, so restarting it leaves the suite's own Redis alone. Three crisis managers watch the incident's board with
a client that behaves as the page does (frontend/static/frontend/app.js and board.js): it subscribes on every
open with the last sequence number it applied (null for a snapshot), takes a snapshot or a `board.tally` frame
as the whole board, asks again on a gap, and reconnects with app.js's back-off and jitter when the socket closes.

Ten people's phones post 300 answers through the signed answer link. A third of the way in, Redis is killed,
stays down for two seconds and comes back empty (no persistence, as after a crash of a cache-only Redis). Then:

- every answer that got HTTP 200 is in the database, with the value it was posted with, and no answer got a 5xx
  (the database was up the whole time: an answer must not depend on Redis);
- every board ends equal to `safety.board` computed from the database, and to the counts read straight from the
  recipients' rows, within seconds of the last answer;
- the boards moved after Redis came back: their sockets closed with 1011 when Redis went away (each Channels
  consumer listens on the layer), reconnected with back-off and were heard again, not left silent by a hub that
  still believed it had joined a group the restarted Redis had forgotten.

The last test checks the quick-restart case on its own: a hub whose layer receive failed joins its groups again
before it receives again."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from django.db import connections

from bench._answers_data import departments_create, incident_open, people_create, recipients_create
from bench._board_data import viewers_create
from directory.models import Organization
from safety.board import board_source, board_view
from safety.events import board_group
from safety.models import Answer, Incident, Recipient
from safety.tokens import answer_token
from tests.resilience.instances import PrivateRedis
from tests.services import DAPHNE_ARGS, daphne, require_postgres, require_redis, subprocess_env
from tests.wsclient import ws_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

SLUG = "acme"
PEOPLE = 300
PHONES = 10  # concurrent answering clients
PAUSE = 0.15  # seconds between one phone's answers: the burst lasts through the restart
RESTART_AFTER = PEOPLE // 3  # answers acknowledged before Redis is killed
DOWN_SECONDS = 2.0
BOARDS = 3
SETTLE_SECONDS = 60  # the board must equal the database within this after the last answer
CHOICES = ("safe", "minor", "serious")
HTTP = aiohttp.ClientTimeout(total=60)
# No access log: the tail printed on failure shows the server's errors, not thousands of requests.
QUIET_DAPHNE = (*DAPHNE_ARGS, "--access-log", os.devnull)


# --- A board client that behaves as the page does ------------------------------------------------------------


@dataclass
class BoardClient:
    """app.js `Live` + board.js for one board stream, over aiohttp."""

    base: str
    session_key: str
    stream: str
    seq: int | None = None
    board: dict[str, Any] | None = None
    opens: int = 0
    snapshots: int = 0
    frames: int = 0
    gaps: int = 0
    failed_connects: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    handshake_statuses: list[int] = field(default_factory=list)
    # (monotonic time, board total) of every snapshot or tally applied
    history: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    attempt: int = 0

    @property
    def total(self) -> dict[str, Any] | None:
        return None if self.board is None else self.board.get("total")

    def _subscribe_frame(self) -> str:
        return json.dumps({"type": "subscribe", "stream": self.stream, "last_seq": self.seq})

    def _apply(self, data: dict[str, Any]) -> None:
        self.board = data
        self.history.append((time.monotonic(), data.get("total", {})))

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        if frame.get("stream") != self.stream:
            return
        if frame.get("type") == "snapshot":
            self.seq = frame["seq"]
            self.snapshots += 1
            self._apply(frame["data"])
        elif frame.get("type") == "event" and frame.get("seq") is not None:
            last = self.seq or 0
            if frame["seq"] <= last:
                return  # seen already
            if frame["seq"] > last + 1:
                self.gaps += 1
                await ws.send_str(self._subscribe_frame())  # a gap: ask for what we missed
                return
            self.seq = frame["seq"]
            if frame.get("event") == "board.tally":
                self.frames += 1
                self._apply(frame["data"])

    async def run(self) -> None:
        """Connect, follow, reconnect with back-off until cancelled."""
        headers = {"Origin": self.base, "Cookie": f"sessionid={self.session_key}"}
        async with aiohttp.ClientSession(timeout=HTTP) as http:
            while True:
                stable: asyncio.TimerHandle | None = None
                try:
                    async with http.ws_connect(
                        ws_url(self.base, f"/{SLUG}/ws/"), headers=headers, autoping=True, heartbeat=None
                    ) as ws:
                        self.opens += 1
                        # app.js resets the back-off only once a connection has lasted 10 s.
                        stable = asyncio.get_running_loop().call_later(10, lambda: setattr(self, "attempt", 0))
                        await ws.send_str(self._subscribe_frame())
                        async for message in ws:
                            if message.type == aiohttp.WSMsgType.TEXT:
                                await self._handle(ws, json.loads(message.data))
                        self.close_codes.append(ws.close_code)
                except aiohttp.WSServerHandshakeError as error:
                    self.handshake_statuses.append(error.status)
                    self.failed_connects += 1
                except (aiohttp.ClientError, OSError, TimeoutError):
                    self.failed_connects += 1
                finally:
                    if stable is not None:
                        stable.cancel()
                delay = min(30.0, 0.5 * 2**self.attempt) * (0.5 + random.random() / 2)
                self.attempt += 1
                await asyncio.sleep(delay)


# --- Data ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    organization_id: int
    incident_id: int
    tokens: dict[int, str]  # person id -> signed answer-link token
    sessions: list[str]  # the board viewers' session keys


def setup_incident(people: int, viewers: int) -> Setup:
    """An organisation with `people` safety users, an open incident sent to all of them, and `viewers` crisis
    managers (or managers) signed in: written in bulk, as the benchmarks do."""
    org = Organization.objects.create(slug=SLUG, name="ACME株式会社")
    departments = departments_create(org, 8)
    ids = people_create(org, people, departments)
    incident = incident_open(org)
    recipients_create(incident, ids)
    sessions = [v.session_key for v in viewers_create(org, viewers, [])]
    tokens = {pid: answer_token(organization_id=org.id, incident_id=incident.id, person_id=pid) for pid in ids}
    return Setup(org.id, incident.id, tokens, sessions)


def database_totals(incident_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The board's total as `safety.board` computes it, and the same numbers counted from the rows directly."""
    try:
        incident = Incident.objects.get(id=incident_id)
        computed = board_view(board_source(incident), None)["total"]
        rows = list(Recipient.objects.filter(incident_id=incident_id).values_list("status", "needs_help"))
    finally:
        connections.close_all()
    statuses = Counter(status or "none" for status, _ in rows)
    direct = {
        "total": len(rows),
        "answered": sum(n for status, n in statuses.items() if status != "none"),
        "needs_help": sum(1 for _, helped in rows if helped),
        "counts": {status: statuses.get(status, 0) for status in ("safe", "minor", "serious", "answered", "none")},
    }
    return computed, direct


def same_numbers(board: dict[str, Any] | None, direct: dict[str, Any]) -> bool:
    if board is None:
        return False
    counts = board.get("counts", {})
    return all(board.get(k) == direct[k] for k in ("total", "answered", "needs_help")) and all(
        counts.get(status, 0) == n for status, n in direct["counts"].items()
    )


@dataclass
class Posted:
    person_id: int
    value: str
    client_key: str
    status: int  # HTTP status, or -1 for a connection error
    at: float
    detail: str = ""


async def post_answer(http: aiohttp.ClientSession, base: str, token: str, value: str, key: str) -> tuple[int, str]:
    body = {"values": {"safety": value}, "via": "link", "client_key": key}
    try:
        async with http.post(
            f"{base}/{SLUG}/api/safety/answer/{token}/",
            json=body,
            headers={"Origin": base, "Accept": "application/json"},
        ) as response:
            return response.status, (await response.text())[:300]
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        return -1, repr(error)


async def answer_burst(
    base: str, tokens: dict[int, str], *, phones: int, pause: float, on_count: dict[int, asyncio.Event]
) -> list[Posted]:
    """`phones` clients post one answer per person, `pause` seconds apart each. `on_count[n]` is set once n
    answers have been acknowledged (any status)."""
    queue = list(tokens.items())
    random.Random(2).shuffle(queue)
    results: list[Posted] = []
    rng = random.Random(10)

    async def phone(http: aiohttp.ClientSession) -> None:
        while queue:
            person_id, token = queue.pop()
            value, key = rng.choice(CHOICES), str(uuid.uuid4())
            status, detail = await post_answer(http, base, token, value, key)
            results.append(Posted(person_id, value, key, status, time.monotonic(), detail if status != 200 else ""))
            if len(results) in on_count:
                on_count[len(results)].set()
            await asyncio.sleep(pause)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=HTTP, connector=connector) as http:
        await asyncio.gather(*(phone(http) for _ in range(phones)))
    return results


def lost_answers(results: list[Posted], incident_id: int) -> list[str]:
    """Answers that got a 200 and are not in the database as posted."""
    try:
        stored = dict(Answer.objects.filter(incident_id=incident_id).values_list("client_key", "status"))
        current = dict(Recipient.objects.filter(incident_id=incident_id).values_list("person_id", "status"))
    finally:
        connections.close_all()
    lost = []
    for r in results:
        if r.status != 200:
            continue
        if stored.get(r.client_key) != r.value or current.get(r.person_id) != r.value:
            lost.append(f"person {r.person_id}: posted {r.value}, stored {stored.get(r.client_key)!r}")
    return lost


# --- The test --------------------------------------------------------------------------------------------------


def test_redis_restart_mid_burst_loses_no_answer_and_boards_end_equal_to_the_database() -> None:
    require_postgres()
    require_redis()  # the suite's: untouched here, but CI must have Redis for this layer to be meaningful
    setup = setup_incident(PEOPLE, BOARDS)
    stream = board_group(setup.incident_id)
    redis = PrivateRedis()
    redis.start()
    try:
        env = subprocess_env(
            REDIS_URL=redis.url,
            CHANNEL_REDIS_PREFIX="hws-restart",
            CACHE_KEY_PREFIX="hws-restart",
            CELERY_TASK_ALWAYS_EAGER="true",
        )
        env.pop("CHANNEL_REDIS_URLS", None)
        with daphne(env, args=QUIET_DAPHNE) as base:  # asserted inside, so a failure prints the server's log
            _check(setup, *asyncio.run(_scenario(base, setup, stream, redis)))
    finally:
        redis.stop()


def _check(
    setup: Setup,
    results: list[Posted],
    boards: list[BoardClient],
    restarted_at: float,
    back_at: float,
    settled_after: float,
) -> None:
    statuses = Counter(r.status for r in results)
    during = [r for r in results if restarted_at <= r.at <= back_at + 1]
    failures = [f"{r.status} at +{r.at - restarted_at:.2f}s: {r.detail}" for r in results if r.status != 200]
    print(
        f"\nanswers by status {dict(statuses)}; {len(during)} acknowledged while Redis was down or just back;"
        f" boards settled {settled_after:.1f}s after the last answer;"
        f" per board (opens, snapshots, tally frames, gaps, failed connects, close codes):"
        f" {[(b.opens, b.snapshots, b.frames, b.gaps, b.failed_connects, b.close_codes) for b in boards]}"
    )
    assert len(results) == PEOPLE
    assert during, "no answer was posted while Redis was down: the burst did not cover the restart"
    assert not failures, f"answers failed while the database was up: {failures[:10]}"
    assert lost_answers(results, setup.incident_id) == []

    computed, direct = database_totals(setup.incident_id)
    assert same_numbers(computed, direct), (computed, direct)
    assert direct["answered"] == PEOPLE
    for board in boards:
        assert same_numbers(board.total, direct), (board.total, direct)
        # The board moved after Redis came back: its socket was healed or reconnected, not left silent.
        assert any(at > back_at for at, _ in board.history), "the board got nothing after Redis came back"
        assert all(code in (None, 1000, 1001, 1011) for code in board.close_codes), board.close_codes
        assert all(status < 500 for status in board.handshake_statuses), board.handshake_statuses


async def _scenario(
    base: str, setup: Setup, stream: str, redis: PrivateRedis
) -> tuple[list[Posted], list[BoardClient], float, float, float]:
    boards = [BoardClient(base, key, stream) for key in setup.sessions]
    tasks = [asyncio.ensure_future(b.run()) for b in boards]
    try:
        # Every board has its first snapshot before the burst.
        deadline = time.monotonic() + 60
        while not all(b.snapshots for b in boards):
            assert time.monotonic() < deadline, "the boards got no snapshot within 60 s"
            await asyncio.sleep(0.1)
        kill = asyncio.Event()
        marks: dict[str, float] = {}

        async def restart() -> None:
            await kill.wait()
            marks["down"] = time.monotonic()
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(DOWN_SECONDS)
            await asyncio.to_thread(redis.start)
            marks["up"] = time.monotonic()

        restarter = asyncio.ensure_future(restart())
        results = await answer_burst(base, setup.tokens, phones=PHONES, pause=PAUSE, on_count={RESTART_AFTER: kill})
        await restarter
        last = time.monotonic()
        # The boards settle on the database's numbers (the ticker re-reads at least every BOARD_REFRESH_SECONDS).
        _, direct = await asyncio.to_thread(database_totals, setup.incident_id)
        while not all(same_numbers(b.total, direct) for b in boards):
            if time.monotonic() - last > SETTLE_SECONDS:
                break
            await asyncio.sleep(0.2)
        settled = time.monotonic() - last
        return results, boards, marks["down"], marks["up"], settled
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- The hub joins its groups again after the layer failed (a quick restart that sockets survive) ------------


class _FlakyLayer:
    """A channel layer whose receive fails once (Redis went away and came back empty), then waits."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failures = 1

    async def new_channel(self) -> str:
        return "hub!1"

    async def group_add(self, group: str, channel: str) -> None:
        self.calls.append(f"add {group}")

    async def group_discard(self, group: str, channel: str) -> None:
        self.calls.append(f"discard {group}")

    async def receive(self, channel: str) -> dict[str, Any]:
        self.calls.append("receive")
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Connection closed by server.")
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class _Socket:
    async def hub_deliver(self, stream: str, seq: int | None, text: str, revoke: Any, frame: bytes) -> None:
        pass


def test_hub_joins_its_groups_again_before_receiving_after_the_layer_failed() -> None:
    from consumers.hub import Hub

    async def scenario() -> list[str]:
        layer = _FlakyLayer()
        hub = Hub(layer)
        socket = _Socket()
        await hub.join("org.1", socket)
        deadline = time.monotonic() + 10
        while layer.calls.count("receive") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await hub.leave("org.1", socket)
        return layer.calls

    calls = asyncio.run(scenario())
    after_failure = calls[calls.index("receive") + 1 :]
    assert after_failure[:2] == ["add org.1", "receive"], calls


def test_a_join_whose_group_add_fails_leaves_nothing_behind_and_the_next_join_adds_the_group() -> None:
    from consumers.hub import Hub

    class _AddFailsOnce(_FlakyLayer):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 0
            self.add_failures = 1

        async def group_add(self, group: str, channel: str) -> None:
            self.calls.append(f"add {group}")
            if self.add_failures:
                self.add_failures -= 1
                raise ConnectionError("Connection closed by server.")

    async def scenario() -> tuple[list[str], bool, set[Any]]:
        layer = _AddFailsOnce()
        hub = Hub(layer)
        first, second = _Socket(), _Socket()
        try:
            await hub.join("org.1", first)
        except ConnectionError:
            pass
        else:
            raise AssertionError("the failing group_add was swallowed")
        left_behind = "org.1" in hub.subscribers
        await hub.join("org.1", second)
        joined = set(hub.subscribers.get("org.1", set()))
        await hub.leave("org.1", second)
        return layer.calls, left_behind, joined

    calls, left_behind, joined = asyncio.run(scenario())
    assert not left_behind
    assert calls.count("add org.1") == 2, calls  # the second join added the group the first could not
    assert len(joined) == 1
