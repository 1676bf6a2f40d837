"""Talk over the live connection (`room.<id>` streams through config.asgi, as a browser connects): the snapshot,
live messages in order, who may follow a room, catch-up after a lost connection (nothing lost, nothing twice),
removal and addition, typing and read receipts, fan-out to every socket once, and presence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from chat import services
from chat.models import Room
from config.asgi import application
from consumers.presence import online_user_ids
from consumers.publisher import stream_seq
from directory.models import User
from tests import factories
from tests.chat.support import talk_person

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

Frame = dict[str, Any]


@pytest.fixture(autouse=True)
async def close_thread_connections():
    """ORM calls from these async tests run on asgiref's worker thread; close its connection afterwards so
    the test database can be dropped at the end of the run."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def people(db: Any) -> dict[str, Any]:
    org = factories.organization(slug="acme")
    other = factories.organization(slug="globex")
    alice, bob, carol = (talk_person(org, name) for name in ("alice", "bob", "carol"))
    room = services.room_group_create(creator=alice, name="防災チーム", member_ids=[bob.id])
    return {
        "alice": alice,
        "bob": bob,
        "carol": carol,  # uses talk, not in the room
        "dave": factories.person(org, "dave"),  # no talk
        "outsider": talk_person(other, "spy"),
        "room": room,
        "stream": f"room.{room.id}",
    }


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user, backend="directory.auth.OrganisationLoginBackend")
    return client.cookies["sessionid"].value


async def open_socket(user: User) -> WebsocketCommunicator:
    cookie = await sync_to_async(session_cookie)(user)
    slug = await sync_to_async(lambda: user.organization.slug)()
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"cookie", f"sessionid={cookie}".encode())]
    ws = WebsocketCommunicator(application, f"/{slug}/ws/", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    hello = await ws.receive_json_from()
    assert hello == {"type": "hello", "user": user.id}
    return ws


async def subscribe(ws: WebsocketCommunicator, stream: str, last_seq: int | None = None) -> Frame:
    """Subscribe; returns the snapshot (last_seq None) or the first frame after the request."""
    await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": last_seq})
    return await ws.receive_json_from()


async def subscribed_with_snapshot(ws: WebsocketCommunicator, stream: str) -> Frame:
    snapshot = await subscribe(ws, stream)
    assert snapshot["type"] == "snapshot" and snapshot["stream"] == stream, snapshot
    assert await ws.receive_json_from() == {"type": "subscribed", "stream": stream, "seq": snapshot["seq"]}
    return snapshot


async def receive_until(ws: WebsocketCommunicator, predicate: Callable[[Frame], bool], timeout: float = 5) -> Frame:
    seen: list[Frame] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no matching frame within {timeout}s; saw {seen}")
        try:
            frame = await ws.receive_json_from(timeout=remaining)
        except TimeoutError:
            raise AssertionError(f"no matching frame within {timeout}s; saw {seen}") from None
        if predicate(frame):
            return frame
        seen.append(frame)


def rest(user: User, method: str, path: str, body: Any = None) -> Any:
    """A REST call as `user` (sync; run it with sync_to_async). Returns (status, JSON)."""
    client = Client()
    client.force_login(user, backend="directory.auth.OrganisationLoginBackend")
    kwargs: dict[str, Any] = {"content_type": "application/json"}
    if body is not None:
        kwargs["data"] = body
    response = getattr(client, method)(path, **kwargs)
    return response.status_code, (response.json() if response.content else None)


async def post_message(user: User, room: Room, body: str) -> Frame:
    status, data = await sync_to_async(rest)(user, "post", f"/acme/api/talk/rooms/{room.id}/messages/", {"body": body})
    assert status == 201, data
    return data


async def post_messages(user: User, room: Room, bodies: list[str]) -> list[Frame]:
    return [await post_message(user, room, body) for body in bodies]


def is_event(event_type: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("type") == "event" and frame.get("event") == event_type


# --- snapshot and live messages -------------------------------------------------------------------------


async def test_subscribe_without_last_seq_gets_a_snapshot_with_newest_messages_and_read_positions(people):
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]
    first, second, third = await post_messages(alice, room, ["一", "二", "三"])
    status, _ = await sync_to_async(rest)(
        bob, "post", f"/acme/api/talk/rooms/{room.id}/read/", {"last_read_id": second["id"]}
    )
    assert status == 200
    ws = await open_socket(bob)
    snapshot = await subscribed_with_snapshot(ws, stream)
    assert snapshot["seq"] == 3  # three messages posted on the stream so far
    data = snapshot["data"]
    assert data["room"] == room.id
    assert [m["id"] for m in data["messages"]] == [first["id"], second["id"], third["id"]]
    assert [m["body"] for m in data["messages"]] == ["一", "二", "三"]
    assert data["messages"][0] == first  # the REST shape
    assert data["read"] == {str(alice.id): third["id"], str(bob.id): second["id"]}
    assert data["has_more"] is False
    await ws.disconnect()


async def test_snapshot_holds_the_newest_page_and_says_there_is_more(people):
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]

    def post_many() -> list[int]:
        return [services.message_send(room=room, sender=alice, body=f"m{n}").id for n in range(35)]

    ids = await sync_to_async(post_many)()
    ws = await open_socket(bob)
    snapshot = await subscribed_with_snapshot(ws, stream)
    messages = snapshot["data"]["messages"]
    assert snapshot["data"]["has_more"] is True
    assert [m["id"] for m in messages] == ids[-len(messages) :] and len(messages) < 35
    assert snapshot["seq"] == 35
    await ws.disconnect()


async def test_live_messages_arrive_in_order_with_consecutive_seqs(people):
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]
    ws = await open_socket(bob)
    snapshot = await subscribed_with_snapshot(ws, stream)
    posted = await post_messages(alice, room, [f"live {n}" for n in range(5)])
    frames = [await ws.receive_json_from() for _ in range(5)]
    assert [(f["type"], f["stream"], f["event"]) for f in frames] == [("event", stream, "message.posted")] * 5
    assert [f["seq"] for f in frames] == [snapshot["seq"] + n for n in range(1, 6)]
    assert [f["data"] for f in frames] == posted
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_edit_and_delete_reach_members_live(people):
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]
    message = await post_message(alice, room, "集合は10時")
    ws = await open_socket(bob)
    await subscribed_with_snapshot(ws, stream)
    status, _ = await sync_to_async(rest)(alice, "patch", f"/acme/api/talk/messages/{message['id']}/", {"body": "11時"})
    assert status == 200
    edited = await ws.receive_json_from()
    assert edited["event"] == "message.edited" and edited["data"]["id"] == message["id"]
    assert edited["data"]["body"] == "11時" and edited["data"]["edited_at"]
    status, _ = await sync_to_async(rest)(alice, "delete", f"/acme/api/talk/messages/{message['id']}/")
    assert status == 200
    deleted = await ws.receive_json_from()
    assert deleted["event"] == "message.deleted" and deleted["data"]["id"] == message["id"]
    assert deleted["data"]["deleted"] is True and deleted["data"]["body"] == ""
    assert deleted["seq"] == edited["seq"] + 1
    await ws.disconnect()


# --- who may follow a room ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["carol", "dave"])
async def test_non_members_and_people_without_talk_get_not_found(people, who):
    await post_message(people["alice"], people["room"], "secret")
    ws = await open_socket(people[who])
    for stream in (people["stream"], "room.abc", f"room.{people['room'].id + 1000}"):
        frame = await subscribe(ws, stream)
        assert frame["type"] == "error" and frame["code"] == "not_found", (stream, frame)
    assert await ws.receive_nothing(timeout=0.3)
    # and nothing of the room reaches them later
    await post_message(people["alice"], people["room"], "more secret")
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_someone_of_another_organisation_gets_not_found(people):
    ws = await open_socket(people["outsider"])
    frame = await subscribe(ws, people["stream"])
    assert frame["type"] == "error" and frame["code"] == "not_found"
    await ws.disconnect()


async def test_person_switched_off_talk_cannot_subscribe_on_an_already_open_socket(people):
    """Talk access is decided when a stream is subscribed, not when the socket was opened."""
    bob, stream = people["bob"], people["stream"]
    ws = await open_socket(bob)
    await sync_to_async(User.objects.filter(id=bob.id).update)(talk_available=False)
    frame = await subscribe(ws, stream)
    assert frame["type"] == "error" and frame["code"] == "not_found", frame
    await ws.disconnect()


# --- catch-up -------------------------------------------------------------------------------------------


async def test_reconnect_with_last_seq_gets_exactly_the_missed_messages_then_live_ones(people):
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]
    await post_message(alice, room, "before")
    ws = await open_socket(bob)
    await subscribed_with_snapshot(ws, stream)
    await post_message(alice, room, "seen live")
    seen = await ws.receive_json_from()
    last_seq = seen["seq"]
    await ws.disconnect()  # the train goes into a tunnel

    missed = await post_messages(alice, room, [f"missed {n}" for n in range(5)])

    ws = await open_socket(bob)
    await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": last_seq})
    replayed = [await ws.receive_json_from() for _ in range(5)]
    assert [(f["type"], f["event"]) for f in replayed] == [("event", "message.posted")] * 5
    assert [f["seq"] for f in replayed] == list(range(last_seq + 1, last_seq + 6))
    assert [f["data"]["id"] for f in replayed] == [m["id"] for m in missed]
    assert await ws.receive_json_from() == {"type": "subscribed", "stream": stream, "seq": last_seq + 5}

    after = await post_message(alice, room, "live again")
    live = await ws.receive_json_from()
    assert (live["seq"], live["data"]["id"]) == (last_seq + 6, after["id"])
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_catch_up_while_messages_keep_coming_loses_nothing_and_doubles_nothing(people):
    """Messages posted from other threads while the socket subscribes and replays: every seq exactly once."""
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]
    await post_messages(alice, room, [f"old {n}" for n in range(3)])

    def post_in_own_thread(body: str) -> None:
        try:
            services.message_send(room=room, sender=alice, body=body)
        finally:
            connections.close_all()

    ws = await open_socket(bob)
    posting = asyncio.gather(
        *(sync_to_async(post_in_own_thread, thread_sensitive=False)(f"new {n}") for n in range(20))
    )
    await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": 1})
    await posting
    final = await sync_to_async(stream_seq)(stream)
    assert final == 23
    seqs: list[int] = []
    while not seqs or seqs[-1] < final:
        frame = await ws.receive_json_from(timeout=5)
        if frame["type"] == "event":
            seqs.append(frame["seq"])
        else:
            assert frame == {"type": "subscribed", "stream": stream, "seq": frame["seq"]}, frame
    assert seqs == list(range(2, final + 1))
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_deleted_text_is_not_replayed_to_a_client_catching_up(people):
    """Deleting leaves a placeholder everywhere, including in the events a reconnecting client replays: neither a
    member who was offline nor someone added later (asking for everything from seq 0) gets the deleted text."""
    alice, bob, carol, room, stream = people["alice"], people["bob"], people["carol"], people["room"], people["stream"]
    ws = await open_socket(bob)
    last_seq = (await subscribed_with_snapshot(ws, stream))["seq"]
    await ws.disconnect()

    secret = await post_message(alice, room, "誤送信: 社長の携帯 090-1234-5678")
    status, _ = await sync_to_async(rest)(alice, "delete", f"/acme/api/talk/messages/{secret['id']}/")
    assert status == 200
    await sync_to_async(services.room_members_add)(actor=alice, room=room, member_ids=[carol.id])

    for person, since in ((bob, last_seq), (carol, 0)):
        ws = await open_socket(person)
        await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": since})
        frames = [await ws.receive_json_from()]
        while frames[-1]["type"] != "subscribed":
            frames.append(await ws.receive_json_from())
        text = str(frames)
        assert "090-1234-5678" not in text, f"{person.login_id} was sent the deleted text: {frames}"
        await ws.disconnect()


async def test_client_too_far_behind_gets_a_snapshot_instead(people, settings):
    settings.EVENT_REPLAY_LIMIT = 3
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]
    posted = await post_messages(alice, room, [f"m{n}" for n in range(6)])
    ws = await open_socket(bob)
    frame = await subscribe(ws, stream, last_seq=1)  # 5 behind, limit 3
    assert frame["type"] == "snapshot" and frame["seq"] == 6
    assert [m["id"] for m in frame["data"]["messages"]] == [m["id"] for m in posted]
    assert await ws.receive_json_from() == {"type": "subscribed", "stream": stream, "seq": 6}
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


# --- removal and addition -------------------------------------------------------------------------------


async def test_removed_member_stops_receiving_the_room_at_once(people):
    alice, bob, carol, room, stream = people["alice"], people["bob"], people["carol"], people["room"], people["stream"]
    await sync_to_async(services.room_members_add)(actor=alice, room=room, member_ids=[carol.id])
    carol_ws, bob_ws = await open_socket(carol), await open_socket(bob)
    await subscribed_with_snapshot(carol_ws, stream)
    await subscribed_with_snapshot(carol_ws, f"user.{carol.id}")
    await subscribed_with_snapshot(bob_ws, stream)

    status, _ = await sync_to_async(rest)(alice, "delete", f"/acme/api/talk/rooms/{room.id}/members/{carol.id}/")
    assert status == 204
    # Carol's room view and room list learn of it, and her socket stops following the room.
    frames = [await carol_ws.receive_json_from() for _ in range(3)]
    removed = [f for f in frames if f.get("event") == "talk.room_removed"]
    assert len(removed) == 1 and removed[0]["stream"] == f"user.{carol.id}" and removed[0]["data"] == {"room": room.id}
    assert {"type": "unsubscribed", "stream": stream} in frames
    updated = await receive_until(bob_ws, is_event("room.updated"))
    assert updated["data"]["removed"] == [carol.id]

    await post_message(alice, room, "after carol left")
    after = await bob_ws.receive_json_from()
    assert after["event"] == "message.posted" and after["data"]["body"] == "after carol left"
    assert await carol_ws.receive_nothing(timeout=0.5)
    again = await subscribe(carol_ws, stream)
    assert again["type"] == "error" and again["code"] == "not_found"
    await carol_ws.disconnect()
    await bob_ws.disconnect()


@pytest.mark.parametrize("hub_has_seen_the_stream", [False, True])
async def test_removal_that_reaches_the_process_late_still_stops_the_removed_member(people, hub_has_seen_the_stream):
    """Another process's relay can overtake: the removal (seq n) reaches this process after the next message
    (seq n+1), and the missing frame is fetched from the outbox (by the hub when it has seen a frame of the
    stream before, else by each socket). The removed member must still be cut off."""
    from consumers import publisher

    alice, bob, carol, room, stream = people["alice"], people["bob"], people["carol"], people["room"], people["stream"]
    await sync_to_async(services.room_members_add)(actor=alice, room=room, member_ids=[carol.id])
    carol_ws, bob_ws = await open_socket(carol), await open_socket(bob)
    await subscribed_with_snapshot(carol_ws, stream)
    await subscribed_with_snapshot(bob_ws, stream)
    if hub_has_seen_the_stream:
        await post_message(alice, room, "before the removal")
        for ws in (carol_ws, bob_ws):
            assert (await ws.receive_json_from())["data"]["body"] == "before the removal"

    held: list[Any] = []
    real_relay = publisher.relay
    publisher.relay = lambda events: held.extend(events)  # the removal commits but is not relayed yet
    try:
        await sync_to_async(services.room_member_remove)(actor=alice, room=room, member=carol)
    finally:
        publisher.relay = real_relay
    await post_message(alice, room, "not for carol")  # relayed at once: the hub sees a gap and fills it

    updated = await bob_ws.receive_json_from()
    message = await bob_ws.receive_json_from()
    assert (updated["event"], message["event"]) == ("room.updated", "message.posted")
    assert message["seq"] == updated["seq"] + 1
    await sync_to_async(real_relay)(held)  # the late relay arrives after all

    carol_frames: list[Frame] = []
    while not await carol_ws.receive_nothing(timeout=0.5):  # (a receive that times out would end the app)
        carol_frames.append(await carol_ws.receive_json_from())
    bodies = [f["data"].get("body") for f in carol_frames if f.get("event") == "message.posted"]
    assert bodies == [], f"a removed member received {bodies}; frames: {carol_frames}"
    assert {"type": "unsubscribed", "stream": stream} in carol_frames, carol_frames
    await carol_ws.disconnect()
    await bob_ws.disconnect()


async def test_person_added_to_a_room_hears_of_it_on_their_own_stream(people):
    alice, carol, room, stream = people["alice"], people["carol"], people["room"], people["stream"]
    ws = await open_socket(carol)
    await subscribed_with_snapshot(ws, f"user.{carol.id}")
    status, _ = await sync_to_async(rest)(
        alice, "post", f"/acme/api/talk/rooms/{room.id}/members/", {"person_ids": [carol.id]}
    )
    assert status == 200
    added = await ws.receive_json_from()
    assert (added["stream"], added["event"], added["data"]) == (
        f"user.{carol.id}",
        "talk.room_added",
        {"room": room.id},
    )
    snapshot = await subscribed_with_snapshot(ws, stream)  # and may now follow the room
    assert snapshot["data"]["room"] == room.id
    await post_message(alice, room, "ようこそ")
    welcome = await ws.receive_json_from()
    assert welcome["event"] == "message.posted" and welcome["data"]["body"] == "ようこそ"
    await ws.disconnect()


# --- typing and read receipts ---------------------------------------------------------------------------


async def test_typing_reaches_the_others_without_a_seq(people):
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]
    ws = await open_socket(bob)
    snapshot = await subscribed_with_snapshot(ws, stream)
    status, _ = await sync_to_async(rest)(alice, "post", f"/acme/api/talk/rooms/{room.id}/typing/", {})
    assert status == 204
    typing = await ws.receive_json_from()
    assert (typing["type"], typing["stream"], typing["event"], typing["seq"]) == ("event", stream, "room.typing", None)
    assert typing["data"]["user"] == alice.id and typing["data"]["name"] == alice.display_name
    # Ephemeral: it takes no seq, so the next message follows the snapshot's seq directly.
    await post_message(alice, room, "hi")
    message = await ws.receive_json_from()
    assert message["seq"] == snapshot["seq"] + 1
    # Nothing of it is replayed to a client catching up.
    late = await open_socket(bob)
    await late.send_json_to({"type": "subscribe", "stream": stream, "last_seq": snapshot["seq"]})
    replayed = await late.receive_json_from()
    assert replayed["event"] == "message.posted"
    assert (await late.receive_json_from())["type"] == "subscribed"
    await late.disconnect()
    await ws.disconnect()


async def test_read_position_reaches_the_others_for_receipts(people):
    alice, bob, room, stream = people["alice"], people["bob"], people["room"], people["stream"]
    message = await post_message(alice, room, "読んだら返事を")
    ws = await open_socket(alice)
    await subscribed_with_snapshot(ws, stream)
    status, _ = await sync_to_async(rest)(
        bob, "post", f"/acme/api/talk/rooms/{room.id}/read/", {"last_read_id": message["id"]}
    )
    assert status == 200
    read = await ws.receive_json_from()
    assert (read["event"], read["seq"]) == ("room.read", None)
    assert read["data"] == {"user": bob.id, "last_read_id": message["id"]}
    # Reading the same again moves nothing and says nothing.
    await sync_to_async(rest)(bob, "post", f"/acme/api/talk/rooms/{room.id}/read/", {"last_read_id": message["id"]})
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


# --- fan-out and presence -------------------------------------------------------------------------------


async def test_every_socket_in_the_process_gets_each_frame_exactly_once(people):
    alice, bob, carol, room, stream = people["alice"], people["bob"], people["carol"], people["room"], people["stream"]
    await sync_to_async(services.room_members_add)(actor=alice, room=room, member_ids=[carol.id])
    sockets = [await open_socket(bob), await open_socket(carol), await open_socket(bob)]  # bob has two tabs
    seqs = [(await subscribed_with_snapshot(ws, stream))["seq"] for ws in sockets]
    assert len(set(seqs)) == 1
    posted = await post_messages(alice, room, ["a", "b", "c"])
    for ws in sockets:
        frames = [await ws.receive_json_from() for _ in range(3)]
        assert [f["data"]["id"] for f in frames] == [m["id"] for m in posted]
        assert [f["seq"] for f in frames] == [seqs[0] + 1, seqs[0] + 2, seqs[0] + 3]
        assert await ws.receive_nothing(timeout=0.3)
    # One socket leaving the room does not take the others' frames with it.
    await sockets[0].send_json_to({"type": "unsubscribe", "stream": stream})
    assert await sockets[0].receive_json_from() == {"type": "unsubscribed", "stream": stream}
    await post_message(alice, room, "d")
    for ws in sockets[1:]:
        assert (await ws.receive_json_from())["data"]["body"] == "d"
    assert await sockets[0].receive_nothing(timeout=0.3)
    for ws in sockets:
        await ws.disconnect()


async def test_a_connected_socket_makes_the_person_online_until_it_closes(people):
    bob, alice = people["bob"], people["alice"]
    assert await sync_to_async(online_user_ids)([bob.id, alice.id]) == set()
    first = await open_socket(bob)
    assert await sync_to_async(online_user_ids)([bob.id, alice.id]) == {bob.id}
    second = await open_socket(bob)
    await first.disconnect()
    assert await sync_to_async(online_user_ids)([bob.id]) == {bob.id}  # still on the other tab
    await second.disconnect()
    assert await sync_to_async(online_user_ids)([bob.id]) == set()
    status, presence = await sync_to_async(rest)(alice, "get", f"/acme/api/talk/presence/?ids={bob.id}")
    assert status == 200 and presence == {str(bob.id): False}


async def test_presence_api_reports_a_connected_member(people):
    bob, alice = people["bob"], people["alice"]
    ws = await open_socket(bob)
    status, presence = await sync_to_async(rest)(alice, "get", f"/acme/api/talk/presence/?ids={bob.id},{alice.id}")
    assert status == 200 and presence == {str(bob.id): True, str(alice.id): False}
    await ws.disconnect()


async def test_member_online_in_the_room_gets_no_push(people):
    from consumers.models import OutboxEvent

    alice, bob, room = people["alice"], people["bob"], people["room"]
    ws = await open_socket(bob)
    await post_message(alice, room, "while bob is here")
    await ws.disconnect()
    await post_message(alice, room, "after bob left")
    pushes: list[Any] = await sync_to_async(
        lambda: list(
            OutboxEvent.objects.filter(stream=f"room.{room.id}").order_by("seq").values_list("push", flat=True)
        )
    )()
    assert pushes[0] is None or pushes[0]["user_ids"] == []
    assert pushes[1]["user_ids"] == [bob.id]
