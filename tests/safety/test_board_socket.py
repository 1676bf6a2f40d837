"""The board stream on the real live socket: snapshot, coalesced tally frames numbered on the stream counter,
reconnect and gaps, who may open which board, instructions and completion.

Real PostgreSQL, the channel layer of the test settings (Redis when REDIS_URL is set), the hub's real ticker
with a short poll and gap. Every number a socket shows is checked against a COUNT(*) written here in SQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.db import close_old_connections, connection
from django.db.models import F
from django.test import Client

from config.asgi import application
from config.errors import ApplicationError
from consumers import streams
from consumers.models import Stream
from consumers.publisher import stream_seq, wire_frame
from directory.models import Organization, Role, User
from safety import board as safety_board
from safety import services
from safety.board import STATUSES
from safety.events import BOARD_INSTRUCTION, BOARD_TALLY, board_group
from safety.models import Incident, Recipient
from tests import factories
from tests.safety.conftest import Tree, answer, safety_person, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]

POLL_MS, FRAME_MS = 50, 100
WAIT = 8.0  # seconds: the longest any condition below may take before the test fails


@pytest.fixture(autouse=True)
async def close_thread_connections():
    """ORM calls from these async tests run on asgiref's worker thread; close its connection afterwards so
    the test database can be dropped at the end of the run."""
    yield
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> Iterator[None]:
    """A channel layer per test, as each web process has its own. channels_redis keeps asyncio locks on the layer
    object (one per receiving channel), bound to the event loop that first waited on them; each test runs its own
    loop, so a lock left held by a message in flight when the last test's loop closed would break the next test's
    hub with "bound to a different event loop"."""
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)


@dataclass
class Ticks:
    """Reads of the board ticker: the real board_tick, counted so a test can wait until the ticker is idle."""

    started: int = 0
    finished: int = 0

    @property
    def running(self) -> bool:
        return self.started != self.finished


@pytest.fixture(autouse=True)
def ticks(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ticks]:
    settings.BOARD_POLL_MS = POLL_MS
    settings.BOARD_FRAME_MS = FRAME_MS
    settings.BOARD_REFRESH_SECONDS = 60  # only marks make the ticker read, so a quiet board stays quiet
    settings.BOARD_LEASE_SECONDS = 5
    counted = Ticks()
    kind = streams.STREAM_KINDS["board"]
    assert kind.ticker is not None

    def tick(key: str, sent: Any) -> list[safety_board.BoardFrame]:
        counted.started += 1
        try:
            return safety_board.board_tick(key, sent)
        finally:
            # channels.testing swaps channels.db's close_old_connections for a no-op while a communicator runs,
            # so the ticker's worker thread would keep its connection (and the test database could not be
            # dropped). Close it as database_sync_to_async does outside tests.
            close_old_connections()
            counted.finished += 1

    monkeypatch.setitem(streams.STREAM_KINDS, "board", replace(kind, ticker=replace(kind.ticker, tick=tick)))
    yield counted


# --- people and the incident --------------------------------------------------------------------------------------


@dataclass
class Scene:
    org: Organization
    incident: Incident
    tree: Tree
    crisis: User
    people: dict[str, User]

    def stream(self, department_id: int | None = None) -> str:
        return board_group(self.incident.id, department_id)


@pytest.fixture
def scene(org: Organization, crisis: User, incident: Incident, tree: Tree) -> Scene:
    people = {
        "hq": safety_person(org, "hq", department=tree.hq),
        "sales": safety_person(org, "sales", department=tree.sales),
        "east1": safety_person(org, "east1", department=tree.east),
        "east2": safety_person(org, "east2", department=tree.east),
        "plant1": safety_person(org, "plant1", department=tree.plant),
        "plant2": safety_person(org, "plant2", department=tree.plant),
    }
    tree.plant.name = "第一工場"  # distinctive, so a leak into another board's text is found by a substring search
    tree.plant.save(update_fields=["name"])
    people["plant1"].last_name, people["plant1"].first_name = "工場", "一郎"
    people["plant1"].save(update_fields=["last_name", "first_name"])
    for n in range(50):
        people[f"crowd{n}"] = safety_person(org, f"crowd{n}", department=(tree.east, tree.plant)[n % 2])
    send(incident, crisis)
    return Scene(org, incident, tree, crisis, people)


# --- the oracle: the numbers in SQL -------------------------------------------------------------------------------


def sql_totals(incident_id: int, department_ids: Collection[int] | None = None) -> dict[str, Any]:
    """total / answered / rate / counts / needs_help / attention of the board, counted here in SQL."""
    where, params = "r.incident_id = %s", list[Any]([incident_id])
    if department_ids is not None:
        where += f" AND u.department_id IN ({', '.join(['%s'] * len(department_ids))})"
        params.extend(department_ids)
    sql = (
        "SELECT COALESCE(NULLIF(r.status, ''), 'none'), r.needs_help, COUNT(*)"  # noqa: S608  (table names only)
        f" FROM {Recipient._meta.db_table} r JOIN {User._meta.db_table} u ON u.id = r.person_id"
        f" WHERE {where} GROUP BY 1, 2"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    counts = dict.fromkeys(STATUSES, 0)
    needs_help = attention = 0
    for status, helped, n in rows:
        counts[status] += n
        needs_help += n if helped else 0
        attention += n if helped or status == "serious" else 0
    total = sum(counts.values())
    answered = total - counts["none"]
    return {
        "total": total,
        "answered": answered,
        "rate": round(answered / total, 4) if total else 0.0,
        "counts": counts,
        "needs_help": needs_help,
        "attention": attention,
    }


async def sql(incident: Incident, department_ids: Collection[int] | None = None) -> dict[str, Any]:
    return await sync_to_async(sql_totals)(incident.id, department_ids)


async def answer_as(scene: Scene, name: str, safety: str = "safe", **values: Any) -> None:
    await sync_to_async(answer)(scene.incident, scene.people[name], safety, **values)


# --- sockets ------------------------------------------------------------------------------------------------------


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user, backend="directory.auth.OrganisationLoginBackend")
    return client.cookies["sessionid"].value


async def open_socket(user: User, slug: str | None = None) -> WebsocketCommunicator:
    cookie = await sync_to_async(session_cookie)(user)
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"cookie", f"sessionid={cookie}".encode())]
    ws = WebsocketCommunicator(application, f"/{slug or user.organization.slug}/ws/", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    return ws


@dataclass
class BoardSocket:
    """One socket following one board: checks every frame's sequence number as it arrives."""

    ws: WebsocketCommunicator
    stream: str
    seq: int | None = None
    board: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)  # snapshots and events of the stream
    texts: list[str] = field(default_factory=list)  # every text frame, raw

    async def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        text = await self.ws.receive_from(timeout=timeout)
        self.texts.append(text)
        frame: dict[str, Any] = json.loads(text)
        if frame.get("stream") == self.stream and frame["type"] in ("snapshot", "event"):
            seq = frame["seq"]
            if frame["type"] == "snapshot":
                assert self.seq is None or seq >= self.seq, (seq, self.seq)
                self.board = frame["data"]
            else:
                # Live frames reach the page in order and without holes: a hole becomes a snapshot.
                assert self.seq is not None and seq == self.seq + 1, (seq, self.seq, frame["event"])
                if frame["event"] == BOARD_TALLY:
                    self.board = frame["data"]
            self.seq = seq
            self.frames.append(frame)
        elif frame.get("stream") == self.stream and frame["type"] == "subscribed":
            assert self.seq is None or frame["seq"] == self.seq, (frame, self.seq)
            self.seq = frame["seq"]
        return frame

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            assert remaining > 0, f"timed out; last frames: {self.texts[-3:]}"
            frame = await self.recv(timeout=remaining)
            if predicate(frame):
                return frame

    async def tally_where(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        frame = await self.until(lambda f: is_tally(f, self.stream) and check(f["data"]))
        return frame["data"]

    async def subscribe(self, last_seq: int | None = None) -> dict[str, Any]:
        """Subscribe and return the first frame after the request (snapshot, event, subscribed or error)."""
        await self.ws.send_json_to({"type": "subscribe", "stream": self.stream, "last_seq": last_seq})
        return await self.recv()


def is_tally(frame: dict[str, Any], stream: str) -> bool:
    return frame.get("type") == "event" and frame.get("stream") == stream and frame.get("event") == BOARD_TALLY


async def board_socket(user: User, stream: str, last_seq: int | None = None) -> BoardSocket:
    ws = await open_socket(user)
    assert (await ws.receive_json_from())["type"] == "hello"
    sock = BoardSocket(ws, stream, seq=last_seq)
    first = await sock.subscribe(last_seq)
    if last_seq is None:
        assert first["type"] == "snapshot", first
    if first["type"] != "subscribed":
        await sock.until(lambda f: f["type"] == "subscribed")
    return sock


async def wait_for(condition: Callable[[], Any], timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await sync_to_async(condition)():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(POLL_MS / 1000 / 2)


async def settle(ticks: Ticks, incident: Incident, *socks: BoardSocket) -> None:
    """Wait until the ticker has read at least once, holds no mark, is not reading, and every socket has the
    stream's current sequence number: from here on nothing moves until the test changes something."""
    dirty_key = f"board:dirty:{incident.id}"
    for _ in range(100):
        await wait_for(lambda: ticks.finished >= 1 and not ticks.running and cache.get(dirty_key) is None)
        for sock in socks:
            current = await sync_to_async(stream_seq)(sock.stream)
            while sock.seq is None or sock.seq < current:
                await sock.recv()
        # Two looks later the counter must not have moved.
        before = [await sync_to_async(stream_seq)(s.stream) for s in socks]
        started = ticks.started
        await asyncio.sleep(2 * POLL_MS / 1000)
        after = [await sync_to_async(stream_seq)(s.stream) for s in socks]
        if before == after and ticks.started == started and not ticks.running:
            return
    raise AssertionError("the board never settled")


def numbers(board: dict[str, Any]) -> dict[str, Any]:
    return dict(board["total"])


# --- snapshot and live tallies ------------------------------------------------------------------------------------


async def test_subscribe_gets_a_snapshot_then_absolute_tallies_and_a_burst_is_coalesced(scene, ticks):
    await sync_to_async(services.instruction_post)(incident=scene.incident, actor=scene.crisis, body="落ち着いて")
    sock = await board_socket(scene.crisis, scene.stream())
    snapshot = sock.frames[0]
    assert snapshot["type"] == "snapshot" and snapshot["stream"] == scene.stream()
    assert snapshot["seq"] >= 1  # the instruction's event numbered the stream (and the ticker may have, too)
    data = snapshot["data"]
    assert numbers(data) == await sql(scene.incident)
    assert data["total"]["total"] == 56 and data["total"]["answered"] == 0
    assert [i["body"] for i in data["instructions"]] == ["落ち着いて"]
    assert data["incident"]["id"] == scene.incident.id and data["frozen"] is False
    assert data["scope"] == {"department_id": None, "name": ""}
    await settle(ticks, scene.incident, sock)

    await answer_as(scene, "hq", "safe")
    board = await sock.tally_where(lambda d: d["total"]["answered"] == 1)
    assert numbers(board) == await sql(scene.incident)
    assert "instructions" not in board  # a tally carries the numbers; instructions come as their own events
    await answer_as(scene, "east1", "serious", help="yes", comment="足を怪我しました")
    board = await sock.tally_where(lambda d: d["total"]["answered"] == 2)
    assert numbers(board) == await sql(scene.incident)
    assert board["total"]["counts"]["serious"] == 1 and board["total"]["needs_help"] == 1
    assert [(a["name"], a["comment"]) for a in board["attention"]] == [
        (scene.people["east1"].display_name, "足を怪我しました")
    ]
    by_id = {d["id"]: d for d in board["departments"]}
    assert by_id[scene.tree.east.id]["answered"] == 1 and by_id[scene.tree.hq.id]["counts"]["safe"] == 1
    await settle(ticks, scene.incident, sock)

    # A burst of 50 answers: a few frames of absolute numbers, not 50, and the last one is the truth.
    before, reads = len(sock.frames), ticks.started
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(50):
        await answer_as(scene, f"crowd{n}", ("safe", "minor", "serious")[n % 3], help="yes" if n % 5 == 0 else "no")
    final = await sql(scene.incident)
    assert final["answered"] == 52
    board = await sock.tally_where(lambda d: d["total"]["answered"] == 52)
    elapsed = loop.time() - started
    burst = [f for f in sock.frames[before:] if is_tally(f, sock.stream)]
    assert sock.frames[-1]["data"] is board
    assert numbers(board) == final
    assert 1 <= len(burst) < 50
    assert len(burst) <= elapsed / (FRAME_MS / 1000) + 2, (len(burst), elapsed)  # at most one per gap
    assert ticks.started - reads <= elapsed / (POLL_MS / 1000) + 2  # a read that finds no change costs no gap
    await settle(ticks, scene.incident, sock)
    assert numbers(sock.board or {}) == await sql(scene.incident)
    await sock.ws.disconnect()


async def test_the_series_and_milestones_follow_the_answers(scene, ticks):
    sock = await board_socket(scene.crisis, scene.stream())
    await settle(ticks, scene.incident, sock)
    for n in range(15):
        await answer_as(scene, f"crowd{n}")
    board = await sock.tally_where(lambda d: d["total"]["answered"] == 15)
    assert board["series"]["points"][-1] == 15
    assert board["series"]["points"] == sorted(board["series"]["points"])
    reached = {m["percent"]: m["seconds"] for m in board["milestones"]}
    assert reached[25] is not None and reached[50] is None and reached[75] is None  # 15 of 56
    await sock.ws.disconnect()


# --- reconnect ----------------------------------------------------------------------------------------------------


async def test_reconnect_behind_gets_a_snapshot_and_at_the_current_seq_only_subscribed(scene, ticks):
    first = await board_socket(scene.crisis, scene.stream())
    await settle(ticks, scene.incident, first)
    seen = first.seq
    assert seen is not None
    await answer_as(scene, "hq", "minor")
    await answer_as(scene, "sales", "safe")
    await first.tally_where(lambda d: d["total"]["answered"] == 2)
    await settle(ticks, scene.incident, first)
    assert first.seq is not None and first.seq > seen

    # Behind: board frames are not in the outbox, so a snapshot at the current seq, not a replay.
    behind = await board_socket(scene.crisis, scene.stream(), last_seq=seen)
    assert [f["type"] for f in behind.frames] == ["snapshot"]
    assert behind.seq == first.seq
    assert numbers(behind.board or {}) == await sql(scene.incident)

    # Current: nothing to send but "subscribed".
    ws = await open_socket(scene.crisis)
    await ws.receive_json_from()
    current = BoardSocket(ws, scene.stream())
    assert await current.subscribe(first.seq) == {"type": "subscribed", "stream": scene.stream(), "seq": first.seq}

    # Only an instruction happened since: it is in the outbox, so it is replayed as an event.
    at = first.seq
    await sync_to_async(services.instruction_post)(incident=scene.incident, actor=scene.crisis, body="点呼を取る")
    await first.until(lambda f: f.get("event") == BOARD_INSTRUCTION)
    replay = await board_socket(scene.crisis, scene.stream(), last_seq=at)
    assert [(f["type"], f.get("event"), f["seq"]) for f in replay.frames] == [("event", BOARD_INSTRUCTION, at + 1)]
    assert replay.frames[0]["data"]["body"] == "点呼を取る"

    # All of them follow the next change.
    await answer_as(scene, "east1")
    for sock in (first, behind, current, replay):
        board = await sock.tally_where(lambda d: d["total"]["answered"] == 3)
        assert numbers(board) == await sql(scene.incident)
        assert sock.seq == first.seq
    for sock in (first, behind, current, replay):
        await sock.ws.disconnect()


async def test_one_ticker_per_incident_lives_while_any_of_its_boards_is_open(scene, ticks):
    """Boards of one incident share the hub's one ticker; the last socket's leave stops it and frees its lease,
    and the next socket starts a ticker again whose first read sends the numbers."""
    from consumers.hub import hub_for

    hub = hub_for(get_channel_layer())
    name, lease = f"board:{scene.incident.id}", f"ticker:board:{scene.incident.id}"
    whole = await board_socket(scene.crisis, scene.stream())
    sales = await board_socket(scene.crisis, scene.stream(scene.tree.sales.id))
    assert set(hub.tickers) == {name}
    assert hub.tickers[name][2] == {scene.stream(), scene.stream(scene.tree.sales.id)}
    await settle(ticks, scene.incident, whole, sales)
    assert cache.get(lease) == hub.process

    await whole.ws.disconnect()
    assert hub.tickers[name][2] == {scene.stream(scene.tree.sales.id)}
    await answer_as(scene, "east1", "minor")
    board = await sales.tally_where(lambda d: d["total"]["answered"] == 1)
    assert numbers(board) == await sql(scene.incident, {scene.tree.sales.id, scene.tree.east.id})

    await sales.ws.disconnect()
    assert name not in hub.tickers
    assert cache.get(lease) is None
    last = whole.seq
    await answer_as(scene, "hq")  # nobody watches: marked, not sent

    # The whole board's counter has not moved, so this is "subscribed" (or a snapshot, if the new ticker's first
    # frame was numbered first); either way the new ticker's first read sends the new numbers at once.
    again = await board_socket(scene.crisis, scene.stream(), last_seq=last)
    assert [f["type"] for f in again.frames] in (["snapshot"], [])
    if again.board is None or again.board["total"]["answered"] != 2:
        await again.tally_where(lambda d: d["total"]["answered"] == 2)
    assert numbers(again.board or {}) == await sql(scene.incident)
    assert name in hub.tickers
    await wait_for(lambda: cache.get(lease) == hub.process)
    await again.ws.disconnect()
    assert not hub.tickers


# --- a gap in the live frames -------------------------------------------------------------------------------------


async def test_a_gap_in_board_frames_brings_a_snapshot_and_then_live_frames(scene, ticks):
    sock = await board_socket(scene.crisis, scene.stream())
    await settle(ticks, scene.incident, sock)
    last = sock.seq
    assert last is not None

    # A frame numbered last + 2 reaches the process: last + 1 was lost on the way.
    def bump() -> None:
        Stream.objects.filter(key=scene.stream()).update(last_seq=F("last_seq") + 2)

    await sync_to_async(bump)()
    stale = {"stale": True}
    text = wire_frame(stream=scene.stream(), seq=last + 2, event_type=BOARD_TALLY, data=stale)
    layer = get_channel_layer()
    await layer.group_send(
        scene.stream(), {"type": "stream.event", "stream": scene.stream(), "seq": last + 2, "text": text}
    )
    snapshot = await sock.until(lambda f: f.get("stream") == scene.stream())
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == last + 2
    assert numbers(snapshot["data"]) == await sql(scene.incident)
    assert "instructions" in snapshot["data"]

    await answer_as(scene, "plant1", "serious")
    board = await sock.tally_where(lambda d: d["total"]["answered"] == 1)
    assert numbers(board) == await sql(scene.incident)
    after = sock.frames[sock.frames.index(snapshot) + 1 :]
    assert after and all(f["seq"] > last + 2 for f in after)
    assert all(f.get("data") != stale for f in sock.frames)  # the held frame was dropped, not shown
    await sock.ws.disconnect()


async def test_a_gap_delivered_straight_to_the_hub_is_healed_the_same_way(scene, ticks):
    from consumers.hub import hub_for

    sock = await board_socket(scene.crisis, scene.stream())
    await settle(ticks, scene.incident, sock)
    last = sock.seq
    assert last is not None
    await sync_to_async(lambda: Stream.objects.filter(key=scene.stream()).update(last_seq=F("last_seq") + 3))()
    hub = hub_for(get_channel_layer())
    for seq in (last + 3, last + 2):  # the newer one first, then the older one late
        text = wire_frame(stream=scene.stream(), seq=seq, event_type=BOARD_TALLY, data={"late": seq})
        await hub.dispatch({"type": "stream.event", "stream": scene.stream(), "seq": seq, "text": text})
    snapshot = await sock.until(lambda f: f.get("stream") == scene.stream())
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == last + 3
    await answer_as(scene, "east2", "minor")
    await sock.tally_where(lambda d: d["total"]["answered"] == 1)
    after = sock.frames[sock.frames.index(snapshot) + 1 :]
    assert all(f["seq"] > last + 3 and "late" not in f["data"] for f in after)
    await sock.ws.disconnect()


# --- who may open which board -------------------------------------------------------------------------------------


async def test_a_department_manager_sees_only_their_subtree(scene, ticks):
    tree = scene.tree
    manager = await sync_to_async(factories.person)(
        scene.org, "sales-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales
    )
    ws = await open_socket(manager)
    await ws.receive_json_from()
    for key in (scene.stream(), scene.stream(tree.plant.id), scene.stream(tree.hq.id)):
        await ws.send_json_to({"type": "subscribe", "stream": key, "last_seq": None})
        frame = await ws.receive_json_from()
        assert (frame["type"], frame["code"], frame["stream"]) == ("error", "not_found", key)
    await ws.disconnect()

    sales_ids = {tree.sales.id, tree.east.id}
    mine = await board_socket(manager, scene.stream(tree.sales.id))
    east_only = await board_socket(manager, scene.stream(tree.east.id))  # inside their scope: allowed
    whole = await board_socket(scene.crisis, scene.stream())
    assert mine.board is not None and mine.board["scope"] == {"department_id": tree.sales.id, "name": tree.sales.name}
    assert numbers(mine.board) == await sql(scene.incident, sales_ids)
    assert numbers(east_only.board or {}) == await sql(scene.incident, {tree.east.id})
    await settle(ticks, scene.incident, mine, east_only, whole)

    plant_names = {p.display_name for k, p in scene.people.items() if p.department_id == tree.plant.id}
    await answer_as(scene, "plant1", "serious", help="yes", comment="工場で火災")
    await answer_as(scene, "plant2", "minor", help="yes")
    await answer_as(scene, "east1", "serious", help="yes")
    await answer_as(scene, "east2", "safe")
    await answer_as(scene, "hq", "serious")
    expected_mine = await sql(scene.incident, sales_ids)
    expected_whole = await sql(scene.incident)
    board = await mine.tally_where(lambda d: d["total"]["answered"] == expected_mine["answered"])
    assert numbers(board) == expected_mine
    assert expected_mine["answered"] == 2 and expected_whole["answered"] == 5
    assert [a["name"] for a in board["attention"]] == [scene.people["east1"].display_name]

    for frame in mine.frames:
        data = frame["data"]
        assert data["total"]["total"] == expected_mine["total"] == 28  # sales 1, east 2 and 25 of the crowd
        assert {d["id"] for d in data["departments"]} <= sales_ids
        assert not {a["name"] for a in data["attention"]} & plant_names
        assert all(a["department"] in (tree.sales.name, tree.east.name) for a in data["attention"])
    for text in mine.texts:
        assert tree.plant.name not in text and "工場で火災" not in text and "工場 一郎" not in text

    board = await whole.tally_where(lambda d: d["total"]["answered"] == 5)
    assert numbers(board) == expected_whole
    assert {d["id"] for d in board["departments"]} >= {tree.plant.id, tree.east.id, tree.hq.id}
    assert {a["name"] for a in board["attention"]} == {
        scene.people[k].display_name for k in ("plant1", "plant2", "east1", "hq")
    }
    assert any(a["comment"] == "工場で火災" for a in board["attention"])
    for sock in (mine, east_only, whole):
        await sock.ws.disconnect()


async def test_a_manager_moved_or_demoted_by_the_import_stops_receiving_the_old_subtree(scene, ticks, settings):
    """Roles and departments change without an event on the board stream: the socket checks again on its own."""
    settings.STREAM_RECHECK_SECONDS = 1
    tree = scene.tree
    manager = await sync_to_async(factories.person)(
        scene.org, "plant-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.plant
    )
    sock = await board_socket(manager, scene.stream(tree.plant.id))
    watcher = await board_socket(scene.crisis, scene.stream(tree.plant.id))  # keeps the plant board ticking
    await settle(ticks, scene.incident, sock, watcher)

    def move_and_demote() -> None:
        User.objects.filter(id=manager.id).update(department=tree.east)
        manager.role_assignments.all().delete()

    await sync_to_async(move_and_demote)()
    frame = await sock.until(lambda f: f["type"] == "error")
    assert (frame["code"], frame["stream"]) == ("not_found", sock.stream)
    # Nothing of the plant reaches the socket any more.
    await answer_as(scene, "plant1", "serious", help="yes", comment="工場で火災")
    board = await watcher.tally_where(lambda d: any(a["comment"] == "工場で火災" for a in d["attention"]))
    assert board["total"]["counts"]["serious"] >= 1
    assert await sock.ws.receive_nothing(timeout=2 * FRAME_MS / 1000 + 0.5)
    # Subscribing again is refused like any stream they may not read.
    assert (await sock.subscribe())["code"] == "not_found"
    for ws in (sock.ws, watcher.ws):
        await ws.disconnect()


async def test_other_organisations_employees_and_malformed_keys_get_not_found(scene, other_org):
    outsider = await sync_to_async(factories.person)(other_org, "globex-crisis", roles=(Role.CRISIS_MANAGER,))
    ws = await open_socket(outsider, slug=other_org.slug)
    await ws.receive_json_from()
    for key in (scene.stream(), scene.stream(scene.tree.sales.id)):
        await ws.send_json_to({"type": "subscribe", "stream": key, "last_seq": None})
        assert (await ws.receive_json_from())["code"] == "not_found", key
    await ws.disconnect()

    ws = await open_socket(outsider, slug=scene.org.slug)
    assert await ws.receive_output() == {"type": "websocket.close", "code": 4404}

    employee = scene.people["east1"]  # asked by the incident, but no results role
    ws = await open_socket(employee)
    await ws.receive_json_from()
    for key in (scene.stream(), scene.stream(scene.tree.east.id)):
        await ws.send_json_to({"type": "subscribe", "stream": key, "last_seq": None})
        assert (await ws.receive_json_from())["code"] == "not_found", key
    await ws.disconnect()

    ws = await open_socket(scene.crisis)
    await ws.receive_json_from()
    incident_id = scene.incident.id
    other_department = await sync_to_async(factories.department)(other_org, "G1")
    for key in (
        "board.0",
        "board.1-x",
        "board.12-",
        "board.",
        "board.-1",
        f"board.{incident_id}-0",
        f"board.{incident_id}-{scene.tree.sales.id}-1",
        f"board.0{incident_id}",
        f"board.{incident_id + 1000}",
        f"board.{incident_id}-{other_department.id}",  # a department of another organisation
        f"board.{incident_id}-{'9' * 30}",
        f"board.{incident_id}-{'9' * 18}",
        f"board.{incident_id}-{scene.tree.sales.id}x",
        f"board.{incident_id} ",
    ):
        await ws.send_json_to({"type": "subscribe", "stream": key, "last_seq": None})
        frame = await ws.receive_json_from()
        assert frame["type"] == "error" and frame["code"] == "not_found", (key, frame)
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()


# --- instructions and completion ----------------------------------------------------------------------------------


async def test_an_instruction_streams_to_every_open_board_of_the_incident(scene, ticks):
    manager = await sync_to_async(factories.person)(
        scene.org, "sales-manager", roles=(Role.DEPARTMENT_MANAGER,), department=scene.tree.sales
    )
    whole = await board_socket(scene.crisis, scene.stream())
    sales = await board_socket(manager, scene.stream(scene.tree.sales.id))
    await settle(ticks, scene.incident, whole, sales)
    body = "全員、第二避難所へ移動してください。\nエレベーターは使わないこと。"
    await sync_to_async(services.instruction_post)(incident=scene.incident, actor=scene.crisis, body=body)
    for sock in (whole, sales):
        frame = await sock.until(lambda f: f.get("event") == BOARD_INSTRUCTION)
        assert frame["stream"] == sock.stream
        assert frame["data"]["body"] == body and frame["data"]["incident_id"] == scene.incident.id
        assert frame["data"]["author"] == scene.crisis.display_name
    # A snapshot taken now lists it first.
    late = await board_socket(scene.crisis, scene.stream())
    assert late.board is not None and late.board["instructions"][0]["body"] == body
    for sock in (whole, sales, late):
        await sock.ws.disconnect()


async def test_completion_freezes_the_board_with_the_numbers_of_sql(scene, ticks):
    sock = await board_socket(scene.crisis, scene.stream())
    await settle(ticks, scene.incident, sock)
    await answer_as(scene, "hq", "safe")
    await answer_as(scene, "plant2", "serious", help="yes")
    await sock.tally_where(lambda d: d["total"]["answered"] == 2)
    await sync_to_async(services.incident_complete)(incident=scene.incident, actor=scene.crisis)
    board = await sock.tally_where(lambda d: d["frozen"] is True)
    assert board["incident"]["status"] == "completed" and board["incident"]["completed_at"]
    assert board["incident"]["is_open"] is False
    assert numbers(board) == await sql(scene.incident)
    with pytest.raises(ApplicationError):
        await answer_as(scene, "east1")
    await settle(ticks, scene.incident, sock)
    assert numbers(sock.board or {}) == await sql(scene.incident)
    fresh = await board_socket(scene.crisis, scene.stream())
    assert fresh.board is not None and fresh.board["frozen"] is True
    assert numbers(fresh.board) == await sql(scene.incident)
    assert fresh.board["series"] == board["series"]  # frozen: the chart ends at completion
    for s in (sock, fresh):
        await s.ws.disconnect()
