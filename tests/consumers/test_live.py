"""The live connection: session auth, origin check, snapshots, sequence numbers, catch-up and bad frames."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from config.asgi import application
from consumers.models import OutboxEvent
from consumers.publisher import publish_on_commit
from directory.events import org_group
from directory.models import Role
from directory.services import notice_post
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


@pytest.fixture(autouse=True)
async def close_thread_connections():
    """ORM calls from these async tests run on asgiref's worker thread; close its connection afterwards so
    the test database can be dropped at the end of the run."""
    yield
    from django.db import connections

    await sync_to_async(connections.close_all)()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user, backend="directory.auth.OrganisationLoginBackend")
    return client.cookies["sessionid"].value


async def open_socket(user, slug: str | None = None, origin: str = "http://127.0.0.1:8000"):
    cookie = await sync_to_async(session_cookie)(user) if user else ""
    headers = [(b"origin", origin.encode())]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    path = f"/{slug or user.organization.slug}/ws/"
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


@pytest.fixture
def people(db):
    org = factories.organization(slug="acme")
    other = factories.organization(slug="globex")
    return {
        "admin": factories.person(org, "admin", roles=(Role.SYSTEM_ADMIN,)),
        "employee": factories.person(org, "emp"),
        "outsider": factories.person(other, "spy"),
    }


async def post_notice(author, title: str):
    return await sync_to_async(notice_post)(author=author, title=title, push=False)


async def test_signed_in_person_gets_snapshot_then_live_events_in_order(people):
    admin, employee = people["admin"], people["employee"]
    await post_notice(admin, "before")
    ws, connected, _ = await open_socket(employee)
    assert connected
    assert (await ws.receive_json_from())["type"] == "hello"
    stream = org_group(employee.organization_id)
    await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": None})
    snapshot = await ws.receive_json_from()
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == 1
    assert [n["title"] for n in snapshot["data"]["notices"]] == ["before"]
    assert (await ws.receive_json_from()) == {"type": "subscribed", "stream": stream, "seq": 1}

    await post_notice(admin, "second")
    await post_notice(admin, "third")
    first, second = await ws.receive_json_from(), await ws.receive_json_from()
    assert (first["seq"], first["event"], first["data"]["title"]) == (2, "notice.posted", "second")
    assert (second["seq"], second["data"]["title"]) == (3, "third")
    await ws.disconnect()


async def test_reconnect_with_last_seq_replays_only_what_was_missed(people):
    admin, employee = people["admin"], people["employee"]
    for title in ("a", "b", "c"):
        await post_notice(admin, title)
    ws, _, _ = await open_socket(employee)
    await ws.receive_json_from()
    await ws.send_json_to({"type": "subscribe", "stream": org_group(employee.organization_id), "last_seq": 1})
    replayed = [await ws.receive_json_from() for _ in range(2)]
    assert [(f["type"], f["seq"], f["data"]["title"]) for f in replayed] == [("event", 2, "b"), ("event", 3, "c")]
    assert (await ws.receive_json_from())["type"] == "subscribed"
    await ws.disconnect()


async def test_client_too_far_behind_or_ahead_gets_a_snapshot(people, settings):
    settings.EVENT_REPLAY_LIMIT = 2
    admin, employee = people["admin"], people["employee"]
    for title in ("a", "b", "c", "d"):
        await post_notice(admin, title)
    ws, _, _ = await open_socket(employee)
    await ws.receive_json_from()
    stream = org_group(employee.organization_id)
    await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": 1})  # 3 behind, limit 2
    frame = await ws.receive_json_from()
    assert frame["type"] == "snapshot" and frame["seq"] == 4 and len(frame["data"]["notices"]) == 4
    await ws.receive_json_from()
    await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": 99})  # from another database
    frame = await ws.receive_json_from()
    assert frame["type"] == "snapshot" and frame["seq"] == 4
    await ws.disconnect()


async def test_pruned_events_mean_a_snapshot_not_a_partial_replay(people):
    admin, employee = people["admin"], people["employee"]
    for title in ("a", "b", "c"):
        await post_notice(admin, title)
    await sync_to_async(OutboxEvent.objects.filter(seq=2).delete)()
    ws, _, _ = await open_socket(employee)
    await ws.receive_json_from()
    await ws.send_json_to({"type": "subscribe", "stream": org_group(employee.organization_id), "last_seq": 1})
    frame = await ws.receive_json_from()
    assert frame["type"] == "snapshot" and frame["seq"] == 3
    await ws.disconnect()


async def test_sequence_gap_on_the_live_path_is_filled_from_the_outbox(people):
    """An event that reaches the channel layer late (another process's relay) must not be lost or doubled."""
    from consumers import publisher

    admin, employee = people["admin"], people["employee"]
    ws, _, _ = await open_socket(employee)
    await ws.receive_json_from()
    stream = org_group(employee.organization_id)
    await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": None})
    await ws.receive_json_from()
    await ws.receive_json_from()

    held: list = []
    real_relay = publisher.relay
    publisher.relay = lambda events: held.extend(events)  # seq 1 commits but is not relayed yet
    try:
        await post_notice(admin, "late")
    finally:
        publisher.relay = real_relay
    await post_notice(admin, "on time")  # seq 2 arrives first: a gap
    frames = [await ws.receive_json_from(), await ws.receive_json_from()]
    assert [(f["seq"], f["data"]["title"]) for f in frames] == [(1, "late"), (2, "on time")]
    await sync_to_async(real_relay)(held)  # the late relay finally arrives: dropped as a duplicate
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()


async def test_bad_frames_get_an_error_and_the_socket_stays_usable(people):
    ws, _, _ = await open_socket(people["employee"])
    await ws.receive_json_from()
    await ws.send_to(text_data="{not json")
    assert (await ws.receive_json_from())["code"] == "bad_json"
    await ws.send_json_to({"type": "dance"})
    assert (await ws.receive_json_from())["code"] == "unknown_type"
    await ws.send_json_to(["a", "list"])
    assert (await ws.receive_json_from())["code"] == "unknown_type"
    await ws.send_to(bytes_data=b"\x00\x01")
    assert (await ws.receive_json_from())["code"] == "bad_frame"
    await ws.send_json_to({"type": "subscribe", "stream": "org.1", "last_seq": "x"})
    assert (await ws.receive_json_from())["code"] == "bad_request"
    await ws.send_json_to({"type": "unsubscribe", "stream": ["not", "a", "name"]})
    assert (await ws.receive_json_from())["code"] == "bad_request"
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()


async def test_streams_of_other_people_and_organisations_are_not_found(people):
    employee, outsider, admin = people["employee"], people["outsider"], people["admin"]
    ws, _, _ = await open_socket(employee)
    await ws.receive_json_from()
    for stream in (org_group(outsider.organization_id), f"user.{admin.id}", "nope.1", "org.1.2", "../x"):
        await ws.send_json_to({"type": "subscribe", "stream": stream, "last_seq": None})
        frame = await ws.receive_json_from()
        assert frame["type"] == "error" and frame["code"] == "not_found", stream
    await ws.disconnect()


async def test_socket_under_another_organisations_slug_is_closed_not_found(people):
    ws, connected, _ = await open_socket(people["outsider"], slug="acme")
    assert connected
    assert await ws.receive_output() == {"type": "websocket.close", "code": 4404}


async def test_unknown_slug_and_unknown_path_are_closed_not_found(people):
    for slug in ("nope", "ACME"):
        ws, _, _ = await open_socket(people["employee"], slug=slug)
        assert (await ws.receive_output())["code"] == 4404


async def test_person_who_must_choose_a_password_gets_no_live_stream(people):
    person = people["employee"]
    person.must_change_password = True
    await sync_to_async(person.save)()
    ws, connected, _ = await open_socket(person)
    assert connected
    assert (await ws.receive_output())["code"] == 4403


async def test_anonymous_socket_is_closed_unauthenticated(people):
    ws, connected, _ = await open_socket(None, slug="acme")
    assert connected
    assert (await ws.receive_output())["code"] == 4401


async def test_foreign_origin_is_refused_at_handshake(people):
    _, connected, _ = await open_socket(people["employee"], origin="http://evil.example")
    assert not connected


async def test_publish_requires_a_transaction_and_rolled_back_events_never_leave(people):
    employee = people["employee"]
    with pytest.raises(RuntimeError):
        await sync_to_async(publish_on_commit)("org.1", "x", {})

    def rolled_back():
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            publish_on_commit(org_group(employee.organization_id), "notice.posted", {"title": "never"})
            raise ZeroDivisionError

    ws, _, _ = await open_socket(employee)
    await ws.receive_json_from()
    await ws.send_json_to({"type": "subscribe", "stream": org_group(employee.organization_id), "last_seq": 0})
    await ws.receive_json_from()
    await sync_to_async(rolled_back)()
    assert await sync_to_async(OutboxEvent.objects.count)() == 0
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


def test_wire_frame_is_encoded_once_per_event():
    from consumers.publisher import wire_frame

    text = wire_frame(stream="org.1", seq=5, event_type="notice.posted", data={"title": "地震"})
    assert json.loads(text) == {
        "type": "event",
        "stream": "org.1",
        "seq": 5,
        "event": "notice.posted",
        "data": {"title": "地震"},
    }
    assert "地震" in text  # not \\u-escaped: smaller frames
