"""Talk messages over REST: sending (validation, idempotency, throttling, all or nothing), history pages, edit and
delete, unread counts and read positions, the events published after commit, web push to members who are not
connected, and files (stored under random names, downloaded only by members, never shown inline)."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test import Client
from PIL import Image

from chat.models import Attachment, FilePolicy, Message
from consumers.presence import presence_touch
from directory.models import User
from tests import factories
from tests.chat.support import client_for, talk_person

pytestmark = pytest.mark.django_db


def mark_online(*people: User) -> None:
    """As a web process does for the people whose sockets it holds."""
    presence_touch([p.id for p in people], process="test-process")


@pytest.fixture
def room(alice: User, bob: User, carol: User) -> dict[str, Any]:
    """A group room of alice (its administrator), bob and carol."""
    response = client_for(alice).post(
        "/acme/api/talk/rooms/",
        {"name": "防災チーム", "member_ids": [bob.id, carol.id]},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def messages_url(room: dict[str, Any]) -> str:
    return f"/acme/api/talk/rooms/{room['id']}/messages/"


def send(client: Client, room: dict[str, Any], body: str, **extra: Any) -> Any:
    return client.post(messages_url(room), {"body": body, **extra}, content_type="application/json")


def sent(client: Client, room: dict[str, Any], body: str, **extra: Any) -> dict[str, Any]:
    response = send(client, room, body, **extra)
    assert response.status_code == 201, response.content
    return response.json()


def room_summary(client: Client, room_id: int) -> dict[str, Any]:
    (summary,) = [r for r in client.get("/acme/api/talk/rooms/").json() if r["id"] == room_id]
    return summary


# --- sending --------------------------------------------------------------------------------------------


def test_member_sends_a_message_and_everyone_reads_it(
    room, alice, bob, capture_events, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        message = sent(client_for(alice), room, "地震です。\n全員無事ですか？")
    assert message["body"] == "地震です。\n全員無事ですか？"
    assert message["sender"] == {"id": alice.id, "name": alice.display_name}
    assert message["room"] == room["id"] and message["deleted"] is False and message["edited_at"] is None
    history = client_for(bob).get(messages_url(room)).json()
    assert history["messages"] == [message] and history["has_more"] is False
    (event,) = capture_events.of_type("message.posted")
    assert event.stream == f"room.{room['id']}"
    assert event.data == message  # one shape for REST and the stream


@pytest.mark.parametrize(("body", "code"), [("", "empty_message"), ("  \n\t \r\n", "empty_message")])
def test_empty_message_is_refused_and_nothing_is_written(
    room, alice, capture_events, body, code, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = send(client_for(alice), room, body)
    assert response.status_code == 400 and response.json()["code"] == code
    assert response.json()["message"]
    assert not Message.objects.exists()
    assert capture_events.of_type("message.posted") == []


def test_too_long_message_is_refused_with_its_own_code_and_nothing_is_written(
    room, alice, capture_events, django_capture_on_commit_callbacks
):
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = send(client, room, "あ" * 4001)
    assert response.status_code == 400 and response.json()["code"] == "message_too_long"
    assert "4000" in response.json()["message"]
    assert not Message.objects.exists()
    assert capture_events.events == []
    assert sent(client, room, "あ" * 4000)["body"] == "あ" * 4000  # exactly the limit is fine


def test_same_client_id_twice_posts_one_message(room, alice, bob, capture_events, django_capture_on_commit_callbacks):
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        first = sent(client, room, "hello", client_id="c-1")
    with django_capture_on_commit_callbacks(execute=True):
        retry = send(client, room, "hello", client_id="c-1")
    assert retry.status_code in (200, 201)
    assert retry.json()["id"] == first["id"] and retry.json()["client_id"] == "c-1"
    assert Message.objects.count() == 1
    assert len(capture_events.of_type("message.posted")) == 1
    # The id is the sender's own: someone else using the same one posts their own message.
    other = sent(client_for(bob), room, "hello", client_id="c-1")
    assert other["id"] != first["id"]
    assert sent(client, room, "again", client_id="c-2")["id"] not in (first["id"], other["id"])
    assert Message.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_same_client_id_sent_twice_at_once_posts_one_message(room, alice, capture_events):
    """A double tap on a slow network: two requests with one client_id race; both answers name one message."""
    clients = [client_for(alice), client_for(alice)]
    start = threading.Barrier(len(clients))
    answers: list[Any] = []

    def attempt(client: Client) -> None:
        try:
            start.wait(timeout=10)
            response = send(client, room, "一度だけ", client_id="tap-1")
            answers.append((response.status_code, response.json()["id"]))
        except Exception as exc:  # reported below, not lost in the thread
            answers.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 2 and all(isinstance(a, tuple) for a in answers), answers
    assert {status for status, _ in answers} <= {200, 201}
    assert len({message_id for _, message_id in answers}) == 1
    assert Message.objects.filter(client_id="tap-1").count() == 1
    assert len(capture_events.of_type("message.posted")) == 1


def test_sending_too_fast_is_refused_with_429(room, alice, bob, settings):
    settings.TALK_SEND_RATE_PER_MINUTE = 3
    client = client_for(alice)
    for n in range(3):
        sent(client, room, f"message {n}")
    refused = send(client, room, "one too many")
    assert refused.status_code == 429 and refused.json()["code"] == "too_many_messages"
    assert Message.objects.filter(sender=alice).count() == 3
    # The limit is per person: bob is not slowed down by alice.
    sent(client_for(bob), room, "bob is fine")


def test_a_send_that_fails_half_way_leaves_nothing_behind(room, alice, tmp_path, settings, monkeypatch):
    """Message, attachment, stored file and event are one transaction."""
    from chat import services
    from consumers.models import OutboxEvent

    settings.TALK_FILES_DIR = tmp_path / "files"

    def broken_publish(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "publish_on_commit", broken_publish)
    client = client_for(alice)
    client.raise_request_exception = False
    upload = SimpleUploadedFile("photo.png", png_bytes(), content_type="image/png")
    response = client.post(messages_url(room), {"body": "写真", "file": upload})
    assert response.status_code == 500
    assert not Message.objects.exists() and not Attachment.objects.exists()
    assert not OutboxEvent.objects.filter(stream=f"room.{room['id']}").exists()
    assert stored_files(settings) == []


# --- history --------------------------------------------------------------------------------------------


def test_history_comes_in_pages_oldest_first_within_a_page(room, alice, bob):
    client = client_for(alice)
    ids = [sent(client, room, f"m{n}")["id"] for n in range(5)]
    reader = client_for(bob)
    newest = reader.get(messages_url(room), {"limit": 2}).json()
    assert [m["id"] for m in newest["messages"]] == ids[3:] and newest["has_more"] is True
    older = reader.get(messages_url(room), {"limit": 2, "before": ids[3]}).json()
    assert [m["id"] for m in older["messages"]] == ids[1:3] and older["has_more"] is True
    oldest = reader.get(messages_url(room), {"limit": 2, "before": ids[1]}).json()
    assert [m["body"] for m in oldest["messages"]] == ["m0"] and oldest["has_more"] is False
    everything = reader.get(messages_url(room)).json()
    assert [m["id"] for m in everything["messages"]] == ids and everything["has_more"] is False
    bad = reader.get(messages_url(room), {"before": "yesterday"})
    assert bad.status_code == 400 and bad.json()["code"] == "bad_before"


def test_history_of_one_room_never_shows_another_rooms_messages(room, alice, bob):
    other = client_for(alice).post(
        "/acme/api/talk/rooms/direct/", {"person_id": bob.id}, content_type="application/json"
    )
    sent(client_for(alice), other.json(), "private")
    sent(client_for(alice), room, "team")
    assert [m["body"] for m in client_for(bob).get(messages_url(room)).json()["messages"]] == ["team"]


# --- edit and delete ------------------------------------------------------------------------------------


def test_only_the_sender_edits_and_everyone_sees_the_edit(
    room, alice, bob, capture_events, django_capture_on_commit_callbacks
):
    message = sent(client_for(alice), room, "集合は10時")
    url = f"/acme/api/talk/messages/{message['id']}/"
    refused = client_for(bob).patch(url, {"body": "集合は中止"}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["code"] == "not_yours"
    assert Message.objects.get(id=message["id"]).body == "集合は10時"

    with django_capture_on_commit_callbacks(execute=True):
        edited = client_for(alice).patch(url, {"body": "集合は11時"}, content_type="application/json")
    assert edited.status_code == 200
    assert edited.json()["body"] == "集合は11時" and edited.json()["edited_at"] is not None
    (seen,) = client_for(bob).get(messages_url(room)).json()["messages"]
    assert seen["body"] == "集合は11時" and seen["edited_at"] is not None
    (event,) = capture_events.of_type("message.edited")
    assert event.stream == f"room.{room['id']}" and event.data["id"] == message["id"]
    assert event.data["body"] == "集合は11時"
    assert event.push is None  # an edit is not a new message: no push

    too_long = client_for(alice).patch(url, {"body": "x" * 4001}, content_type="application/json")
    assert too_long.status_code == 400 and too_long.json()["code"] == "message_too_long"
    emptied = client_for(alice).patch(url, {"body": "  "}, content_type="application/json")
    assert emptied.status_code == 400 and emptied.json()["code"] == "empty_message"
    assert Message.objects.get(id=message["id"]).body == "集合は11時"


def test_messages_can_be_edited_for_seven_days_but_deleted_later(room, alice, bob):
    from datetime import timedelta

    from django.utils import timezone

    message = sent(client_for(alice), room, "古い連絡")
    Message.objects.filter(id=message["id"]).update(created_at=timezone.now() - timedelta(days=8))
    url = f"/acme/api/talk/messages/{message['id']}/"
    late = client_for(alice).patch(url, {"body": "書き換え"}, content_type="application/json")
    assert late.status_code == 403 and late.json()["code"] == "edit_window_closed"
    assert Message.objects.get(id=message["id"]).body == "古い連絡"
    assert client_for(alice).delete(url).json()["deleted"] is True


def test_only_the_sender_deletes_and_a_placeholder_stays(
    room, alice, bob, carol, capture_events, django_capture_on_commit_callbacks
):
    client = client_for(alice)
    before = sent(client, room, "before")
    message = sent(client, room, "誤送信")
    after = sent(client, room, "after")
    url = f"/acme/api/talk/messages/{message['id']}/"
    refused = client_for(bob).delete(url)
    assert refused.status_code == 403 and refused.json()["code"] == "not_yours"
    assert Message.objects.get(id=message["id"]).deleted_at is None

    with django_capture_on_commit_callbacks(execute=True):
        deleted = client.delete(url)
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True and deleted.json()["body"] == ""
    history = client_for(carol).get(messages_url(room)).json()["messages"]
    assert [m["id"] for m in history] == [before["id"], message["id"], after["id"]]
    placeholder = history[1]
    assert placeholder["deleted"] is True and placeholder["body"] == "" and placeholder["attachment"] is None
    assert placeholder["sender"] == {"id": alice.id, "name": alice.display_name}
    assert "誤送信" not in json.dumps(history, ensure_ascii=False)
    (event,) = capture_events.of_type("message.deleted")
    assert event.stream == f"room.{room['id']}" and event.data["id"] == message["id"]
    assert event.data["deleted"] is True and event.data["body"] == ""
    assert "誤送信" not in json.dumps(event.data, ensure_ascii=False)

    edit_deleted = client.patch(url, {"body": "revived"}, content_type="application/json")
    assert edit_deleted.status_code == 400 and edit_deleted.json()["code"] == "deleted"
    assert Message.objects.get(id=message["id"]).body == ""


# --- unread counts and read positions -------------------------------------------------------------------


def test_unread_counts_follow_what_each_person_has_read(room, alice, bob, carol):
    client = client_for(alice)
    ids = [sent(client, room, f"m{n}")["id"] for n in range(3)]
    assert room_summary(client, room["id"])["unread"] == 0  # one's own messages are read
    bob_client = client_for(bob)
    summary = room_summary(bob_client, room["id"])
    assert summary["unread"] == 3 and summary["last_message"]["id"] == ids[2]

    read = bob_client.post(
        f"/acme/api/talk/rooms/{room['id']}/read/", {"last_read_id": ids[1]}, content_type="application/json"
    )
    assert read.status_code == 200 and read.json() == {"last_read_id": ids[1]}
    assert room_summary(bob_client, room["id"])["unread"] == 1
    assert room_summary(client_for(carol), room["id"])["unread"] == 3

    # A read position never goes back (an older tab reporting late).
    back = bob_client.post(
        f"/acme/api/talk/rooms/{room['id']}/read/", {"last_read_id": ids[0]}, content_type="application/json"
    )
    assert back.json() == {"last_read_id": ids[1]}
    assert room_summary(bob_client, room["id"])["unread"] == 1

    # A deleted message is not waiting to be read.
    client.delete(f"/acme/api/talk/messages/{ids[2]}/")
    assert room_summary(bob_client, room["id"])["unread"] == 0


def test_read_position_names_a_message_of_this_room(room, alice, bob):
    message = sent(client_for(alice), room, "latest")
    read = client_for(bob).post(
        f"/acme/api/talk/rooms/{room['id']}/read/", {"last_read_id": 10**12}, content_type="application/json"
    )
    assert read.json() == {"last_read_id": message["id"]}
    bad = client_for(bob).post(
        f"/acme/api/talk/rooms/{room['id']}/read/", {"last_read_id": -1}, content_type="application/json"
    )
    assert bad.status_code == 400


def test_room_detail_shows_everyones_read_position_for_receipts(room, alice, bob, carol):
    client = client_for(alice)
    first = sent(client, room, "one")
    second = sent(client, room, "two")
    client_for(bob).post(
        f"/acme/api/talk/rooms/{room['id']}/read/", {"last_read_id": second["id"]}, content_type="application/json"
    )
    client_for(carol).post(
        f"/acme/api/talk/rooms/{room['id']}/read/", {"last_read_id": first["id"]}, content_type="application/json"
    )
    detail = client_for(carol).get(f"/acme/api/talk/rooms/{room['id']}/").json()
    assert detail["read"] == {str(alice.id): second["id"], str(bob.id): second["id"], str(carol.id): first["id"]}
    # "read by N" of the second message: the others who read up to it
    readers = [uid for uid, pos in detail["read"].items() if pos >= second["id"] and uid != str(alice.id)]
    assert readers == [str(bob.id)]


# --- web push -------------------------------------------------------------------------------------------


def test_push_goes_to_members_who_are_not_connected(
    room, alice, bob, carol, capture_events, django_capture_on_commit_callbacks
):
    mark_online(bob)  # bob has the app open: the socket delivers it
    with django_capture_on_commit_callbacks(execute=True):
        sent(client_for(alice), room, "至急\n本社に集合してください")
    (event,) = capture_events.of_type("message.posted")
    assert event.push is not None
    assert event.push["user_ids"] == [carol.id]  # not the sender, not bob who is online
    notification = event.push["notification"]
    assert notification["title"] == f"{alice.display_name} (防災チーム)"
    assert notification["body"] == "至急"
    assert notification["url"] == f"/acme/talk/{room['id']}/"


def test_no_push_when_everyone_else_is_connected(
    room, alice, bob, carol, capture_events, django_capture_on_commit_callbacks
):
    mark_online(bob, carol)
    with django_capture_on_commit_callbacks(execute=True):
        sent(client_for(alice), room, "hello")
    (event,) = capture_events.of_type("message.posted")
    assert event.push is None or event.push["user_ids"] == []


def test_push_in_a_one_to_one_room_is_titled_with_the_sender(
    org, alice, bob, capture_events, django_capture_on_commit_callbacks
):
    direct = client_for(bob).post(
        "/acme/api/talk/rooms/direct/", {"person_id": alice.id}, content_type="application/json"
    )
    long_line = "長" * 150
    with django_capture_on_commit_callbacks(execute=True):
        sent(client_for(alice), direct.json(), f"\n{long_line}\n二行目")
    (event,) = capture_events.of_type("message.posted")
    assert event.push["user_ids"] == [bob.id]
    notification = event.push["notification"]
    assert notification["title"] == alice.display_name
    body = notification["body"]
    assert body.startswith("長" * 50) and len(body) <= 100 and "二行目" not in body


def test_members_switched_off_talk_get_no_push(
    room, alice, bob, carol, capture_events, django_capture_on_commit_callbacks
):
    User.objects.filter(id=carol.id).update(talk_available=False)
    with django_capture_on_commit_callbacks(execute=True):
        sent(client_for(alice), room, "hello")
    (event,) = capture_events.of_type("message.posted")
    assert event.push["user_ids"] == [bob.id]


def test_push_reaches_the_offline_members_browser(
    room, alice, bob, carol, push_service, django_capture_on_commit_callbacks
):
    """From the REST send, through the outbox relay and the Celery push tasks, to a push service that
    decrypts the payload and verifies the VAPID signature."""
    mark_online(bob)
    subscribed = client_for(carol).post(
        "/acme/api/push/subscriptions/", push_service.new_subscription(), content_type="application/json"
    )
    assert subscribed.status_code == 201
    client_for(bob).post(
        "/acme/api/push/subscriptions/", push_service.new_subscription(), content_type="application/json"
    )
    with django_capture_on_commit_callbacks(execute=True):
        sent(client_for(alice), room, "避難してください\n詳細は後ほど")
    (received,) = push_service.wait_for(1)
    payload = json.loads(received.payload)
    assert payload["title"] == f"{alice.display_name} (防災チーム)"
    assert payload["body"] == "避難してください"
    assert payload["url"] == f"/acme/talk/{room['id']}/"
    assert len(push_service.received) == 1  # bob, online, got none


# --- files ----------------------------------------------------------------------------------------------


def png_bytes(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def stored_files(settings: Any) -> list[Path]:
    directory = Path(settings.TALK_FILES_DIR)
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.exists() else []


@pytest.fixture
def files_dir(settings: Any, tmp_path: Path) -> Path:
    settings.TALK_FILES_DIR = tmp_path / "talk-files"
    return Path(settings.TALK_FILES_DIR)


def upload(client: Client, room: dict[str, Any], name: str, data: bytes, content_type: str, body: str = "") -> Any:
    return client.post(messages_url(room), {"body": body, "file": SimpleUploadedFile(name, data, content_type)})


def download(client: Client, url: str) -> tuple[Any, bytes]:
    response: Any = client.get(url)
    # Reading a streamed response to its end closes it (the test client's wrapper); closing it again would
    # fire request_finished and close the test's database connection.
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return response, content


def test_uploaded_image_is_stored_under_a_random_name_and_downloaded_as_an_attachment(room, alice, bob, files_dir):
    png = png_bytes()
    # The client's claimed type is ignored: the content decides.
    response = upload(client_for(alice), room, "現場の写真.png", png, "text/html", body="現場です")
    assert response.status_code == 201, response.content
    message = response.json()
    attachment = message["attachment"]
    assert message["body"] == "現場です"
    assert attachment["name"] == "現場の写真.png" and attachment["size"] == len(png)
    assert attachment["content_type"] == "image/png" and attachment["is_image"] is True

    (stored,) = stored_files(django_settings)
    assert stored.read_bytes() == png
    assert stored.parent == files_dir
    assert "写真" not in stored.name and not stored.name.endswith(".png") and len(stored.name) >= 32
    assert not stored.resolve().is_relative_to(Path(django_settings.STATIC_ROOT).resolve())

    got, content = download(client_for(bob), attachment["url"])
    assert got.status_code == 200 and content == png
    assert got["Content-Type"] == "image/png"
    assert got["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''%E7%8F%BE%E5%A0%B4%E3%81%AE%E5%86%99%E7%9C%9F.png" in got["Content-Disposition"]
    assert got["X-Content-Type-Options"] == "nosniff"


def test_file_claiming_to_be_an_image_is_served_as_plain_bytes(room, alice, bob, files_dir):
    page = b"<html><body><script>alert(document.cookie)</script></body></html>"
    response = upload(client_for(alice), room, "photo.png", page, "image/png")
    assert response.status_code == 201, response.content
    attachment = response.json()["attachment"]
    assert attachment["is_image"] is False
    got, content = download(client_for(bob), attachment["url"])
    assert got.status_code == 200 and content == page
    assert not got["Content-Type"].startswith(("text/html", "image/"))
    assert got["Content-Disposition"].startswith("attachment;")
    assert got["X-Content-Type-Options"] == "nosniff"


def test_file_is_not_found_for_anyone_outside_the_room(org, other_org, room, alice, files_dir):
    attachment = upload(client_for(alice), room, "plan.png", png_bytes(), "image/png").json()["attachment"]
    outsider = talk_person(org, "outsider")
    assert download(client_for(outsider), attachment["url"])[0].status_code == 404
    stranger = talk_person(other_org, "stranger")
    assert download(client_for(stranger), attachment["url"])[0].status_code == 404
    assert download(client_for(stranger), f"/globex/api/talk/files/{attachment['id']}/")[0].status_code == 404
    assert download(client_for(alice), f"/acme/api/talk/files/{attachment['id'] + 1000}/")[0].status_code == 404


def test_files_disabled_refuses_the_upload_and_writes_nothing(
    org, room, alice, files_dir, capture_events, django_capture_on_commit_callbacks
):
    from directory.models import Role

    talk_admin = factories.person(org, "talkadmin", roles=(Role.ADMIN_GOTALK,))
    switched = client_for(talk_admin).patch(
        "/acme/api/talk/settings/", {"file_policy": FilePolicy.DISABLED}, content_type="application/json"
    )
    assert switched.status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client_for(alice), room, "photo.png", png_bytes(), "image/png", body="見て")
    assert response.status_code == 400 and response.json()["code"] == "files_disabled"
    assert response.json()["message"]
    assert not Message.objects.exists() and not Attachment.objects.exists()
    assert stored_files(django_settings) == []
    assert capture_events.events == []
    # Text still works.
    assert sent(client_for(alice), room, "文字だけ")["attachment"] is None


def test_message_with_only_a_file_is_accepted_and_pushed_with_the_file_name(
    room, alice, files_dir, capture_events, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client_for(alice), room, "map.png", png_bytes(), "image/png")
    assert response.status_code == 201 and response.json()["body"] == ""
    (event,) = capture_events.of_type("message.posted")
    assert "map.png" in event.push["notification"]["body"]


def test_deleting_the_message_removes_its_file(room, alice, bob, files_dir, django_capture_on_commit_callbacks):
    message = upload(client_for(alice), room, "plan.png", png_bytes(), "image/png").json()
    url = message["attachment"]["url"]
    assert download(client_for(bob), url)[0].status_code == 200
    assert len(stored_files(django_settings)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(alice).delete(f"/acme/api/talk/messages/{message['id']}/").status_code == 200
    assert stored_files(django_settings) == []
    assert download(client_for(bob), url)[0].status_code == 404
    assert download(client_for(alice), url)[0].status_code == 404
    (placeholder,) = client_for(bob).get(messages_url(room)).json()["messages"]
    assert placeholder["deleted"] is True and placeholder["attachment"] is None
