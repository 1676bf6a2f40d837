"""Talk rooms over REST: 1:1 rooms, group rooms and their members, department rooms that follow the directory,
who may see which room, and the talk administrator's settings and access list."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chat.models import FilePolicy, Membership, Room, RoomKind, TalkSettings
from directory.models import Role, User
from tests import factories
from tests.chat.support import client_for, talk_person

pytestmark = pytest.mark.django_db


def room_ids(client: Client, slug: str = "acme") -> list[int]:
    response = client.get(f"/{slug}/api/talk/rooms/")
    assert response.status_code == 200, response.content
    return [room["id"] for room in response.json()]


def create_group(client: Client, name: str, member_ids: list[int]) -> dict[str, Any]:
    response = client.post(
        "/acme/api/talk/rooms/", {"name": name, "member_ids": member_ids}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()


# --- 1:1 rooms ------------------------------------------------------------------------------------------


def test_direct_room_is_opened_once_and_both_people_see_it(
    org, alice, bob, capture_events, django_capture_on_commit_callbacks
):
    alice_client, bob_client = client_for(alice), client_for(bob)
    with django_capture_on_commit_callbacks(execute=True):
        first = alice_client.post(
            "/acme/api/talk/rooms/direct/", {"person_id": bob.id}, content_type="application/json"
        )
    assert first.status_code == 200, first.content
    room = first.json()
    assert room["kind"] == "direct"
    assert room["other"] == {"id": bob.id, "name": bob.display_name}
    assert room["name"] == bob.display_name  # a 1:1 room is named after the other person

    # Opening it again, from either side, gives the same room.
    again = alice_client.post("/acme/api/talk/rooms/direct/", {"person_id": bob.id}, content_type="application/json")
    from_bob = bob_client.post("/acme/api/talk/rooms/direct/", {"person_id": alice.id}, content_type="application/json")
    assert again.json()["id"] == from_bob.json()["id"] == room["id"]
    assert Room.objects.filter(kind=RoomKind.DIRECT).count() == 1
    assert from_bob.json()["name"] == alice.display_name

    assert room["id"] in room_ids(alice_client)
    assert room["id"] in room_ids(bob_client)
    # Bob's room list learns of it live.
    (added,) = capture_events.of_type("talk.room_added")
    assert added.stream == f"user.{bob.id}" and added.data == {"room": room["id"]}


def test_direct_room_with_oneself_is_refused(org, alice):
    response = client_for(alice).post(
        "/acme/api/talk/rooms/direct/", {"person_id": alice.id}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "self_direct"
    assert not Room.objects.exists()


def test_direct_room_with_someone_who_does_not_use_talk_is_refused(org, alice, employee):
    response = client_for(alice).post(
        "/acme/api/talk/rooms/direct/", {"person_id": employee.id}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "not_talk_users"
    assert not Room.objects.exists()


def test_direct_room_with_someone_of_another_organisation_is_not_found(org, other_org, alice):
    stranger = talk_person(other_org, "stranger")
    response = client_for(alice).post(
        "/acme/api/talk/rooms/direct/", {"person_id": stranger.id}, content_type="application/json"
    )
    assert response.status_code == 404
    assert not Room.objects.exists()


# --- group rooms ----------------------------------------------------------------------------------------


def test_group_room_creator_is_its_administrator_and_members_see_it(
    org, alice, bob, carol, capture_events, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        room = create_group(client_for(alice), "  防災チーム ", [bob.id])
    assert room["kind"] == "group" and room["name"] == "防災チーム"
    assert room["is_admin"] is True and room["members_count"] == 2
    detail = client_for(bob).get(f"/acme/api/talk/rooms/{room['id']}/").json()
    assert {m["id"]: m["is_admin"] for m in detail["members"]} == {alice.id: True, bob.id: False}
    assert detail["is_admin"] is False and detail["can_manage"] is False and detail["can_add_members"] is True
    assert room["id"] not in room_ids(client_for(carol))
    assert client_for(carol).get(f"/acme/api/talk/rooms/{room['id']}/").status_code == 404
    assert [e.stream for e in capture_events.of_type("talk.room_added")] == [f"user.{bob.id}"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_group_room_needs_a_sensible_name(org, alice, name):
    response = client_for(alice).post(
        "/acme/api/talk/rooms/", {"name": name, "member_ids": []}, content_type="application/json"
    )
    assert response.status_code == 400
    error = response.json()
    # Either the serializer's field error or the service's own code; both name the fault.
    assert error["code"] in ("name_required", "name_too_long") or "name" in error.get("fields", {}), error
    assert not Room.objects.exists()


def test_group_room_only_with_talk_users_of_the_same_organisation(org, other_org, alice, employee):
    stranger = talk_person(other_org, "stranger")
    client = client_for(alice)
    for member in (employee, stranger):
        response = client.post(
            "/acme/api/talk/rooms/", {"name": "x", "member_ids": [member.id]}, content_type="application/json"
        )
        assert response.status_code == 400 and response.json()["code"] == "not_talk_users"
    assert not Room.objects.exists()


def test_only_the_room_administrator_renames(org, alice, bob, capture_events, django_capture_on_commit_callbacks):
    room = create_group(client_for(alice), "旧名", [bob.id])
    url = f"/acme/api/talk/rooms/{room['id']}/"
    refused = client_for(bob).patch(url, {"name": "乗っ取り"}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["code"] == "not_room_admin"
    with django_capture_on_commit_callbacks(execute=True):
        renamed = client_for(alice).patch(url, {"name": "新名"}, content_type="application/json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "新名"
    assert client_for(bob).get(url).json()["name"] == "新名"
    (updated,) = capture_events.of_type("room.updated")
    assert updated.stream == f"room.{room['id']}" and updated.data["name"] == "新名"


def test_any_member_adds_people_and_they_see_the_room(
    org, alice, bob, carol, capture_events, django_capture_on_commit_callbacks
):
    room = create_group(client_for(alice), "g", [bob.id])
    assert room["id"] not in room_ids(client_for(carol))
    with django_capture_on_commit_callbacks(execute=True):
        added = client_for(bob).post(
            f"/acme/api/talk/rooms/{room['id']}/members/", {"person_ids": [carol.id]}, content_type="application/json"
        )
    assert added.status_code == 200, added.content
    assert {m["id"] for m in added.json()["members"]} == {alice.id, bob.id, carol.id}
    assert room["id"] in room_ids(client_for(carol))
    assert [e.stream for e in capture_events.of_type("talk.room_added")] == [f"user.{carol.id}"]
    (updated,) = capture_events.of_type("room.updated")
    assert updated.data["added"] == [carol.id] and updated.data["members_count"] == 3


def test_non_talk_user_cannot_be_added_to_a_group(org, alice, employee):
    room = create_group(client_for(alice), "g", [])
    response = client_for(alice).post(
        f"/acme/api/talk/rooms/{room['id']}/members/", {"person_ids": [employee.id]}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "not_talk_users"
    assert not Membership.objects.filter(user=employee).exists()


def test_only_the_room_administrator_removes_others_but_anyone_may_leave(
    org, alice, bob, carol, capture_events, django_capture_on_commit_callbacks
):
    room = create_group(client_for(alice), "g", [bob.id, carol.id])
    members = f"/acme/api/talk/rooms/{room['id']}/members/"
    refused = client_for(bob).delete(f"{members}{carol.id}/")
    assert refused.status_code == 403 and refused.json()["code"] == "not_room_admin"
    assert room["id"] in room_ids(client_for(carol))

    with django_capture_on_commit_callbacks(execute=True):
        assert client_for(alice).delete(f"{members}{carol.id}/").status_code == 204
    assert room["id"] not in room_ids(client_for(carol))
    assert client_for(carol).get(f"/acme/api/talk/rooms/{room['id']}/").status_code == 404
    (removed,) = capture_events.of_type("talk.room_removed")
    assert removed.stream == f"user.{carol.id}" and removed.data == {"room": room["id"]}
    (updated,) = capture_events.of_type("room.updated")
    assert updated.data["removed"] == [carol.id] and updated.data["members_count"] == 2

    assert client_for(bob).delete(f"{members}{bob.id}/").status_code == 204  # leaving needs no right
    assert room["id"] not in room_ids(client_for(bob))
    assert client_for(alice).get(f"/acme/api/talk/rooms/{room['id']}/").json()["members_count"] == 1


def test_last_administrator_leaving_hands_the_room_to_the_longest_standing_member(org, alice, bob, carol):
    room = create_group(client_for(alice), "g", [bob.id])
    client_for(bob).post(
        f"/acme/api/talk/rooms/{room['id']}/members/", {"person_ids": [carol.id]}, content_type="application/json"
    )
    assert client_for(alice).delete(f"/acme/api/talk/rooms/{room['id']}/members/{alice.id}/").status_code == 204
    detail = client_for(bob).get(f"/acme/api/talk/rooms/{room['id']}/").json()
    assert {m["id"]: m["is_admin"] for m in detail["members"]} == {bob.id: True, carol.id: False}
    assert detail["can_manage"] is True
    # The new administrator can now do what only administrators do.
    assert client_for(bob).delete(f"/acme/api/talk/rooms/{room['id']}/members/{carol.id}/").status_code == 204


def test_direct_rooms_cannot_be_renamed_or_grown(org, alice, bob, carol):
    client = client_for(alice)
    room = client.post("/acme/api/talk/rooms/direct/", {"person_id": bob.id}, content_type="application/json").json()
    renamed = client.patch(f"/acme/api/talk/rooms/{room['id']}/", {"name": "x"}, content_type="application/json")
    assert renamed.status_code == 403 and renamed.json()["code"] == "not_group"
    grown = client.post(
        f"/acme/api/talk/rooms/{room['id']}/members/", {"person_ids": [carol.id]}, content_type="application/json"
    )
    assert grown.status_code == 403 and grown.json()["code"] == "not_group"
    assert room["id"] not in room_ids(client_for(carol))


# --- department rooms -----------------------------------------------------------------------------------


def department_room_id(client: Client) -> int:
    rooms = [r for r in client.get("/acme/api/talk/rooms/").json() if r["kind"] == "department"]
    assert len(rooms) == 1, rooms
    return int(rooms[0]["id"])


def test_department_room_members_follow_the_directory(org, alice):
    sales, support = factories.department(org), factories.department(org)
    alice.department = sales
    alice.save()
    colleague = talk_person(org, "colleague", department=sales)
    outsider = talk_person(org, "outsider", department=support)

    room_id = department_room_id(client_for(alice))
    room = client_for(colleague).get(f"/acme/api/talk/rooms/{room_id}/").json()
    assert room["kind"] == "department" and room["name"] == sales.name
    assert {m["id"] for m in room["members"]} == {alice.id, colleague.id}
    assert client_for(outsider).get(f"/acme/api/talk/rooms/{room_id}/").status_code == 404
    assert room_id not in room_ids(client_for(outsider))

    # The directory moves the outsider into sales and alice out of it.
    outsider.department = sales
    outsider.save()
    alice.department = support
    alice.save()
    assert client_for(outsider).get(f"/acme/api/talk/rooms/{room_id}/").status_code == 200
    assert room_id in room_ids(client_for(outsider))
    assert client_for(alice).get(f"/acme/api/talk/rooms/{room_id}/").status_code == 404
    assert client_for(alice).get(f"/acme/api/talk/rooms/{room_id}/messages/").status_code == 404
    assert room_id not in room_ids(client_for(alice))
    assert department_room_id(client_for(alice)) != room_id
    members = client_for(colleague).get(f"/acme/api/talk/rooms/{room_id}/").json()["members"]
    assert {m["id"] for m in members} == {colleague.id, outsider.id}


def test_person_who_read_in_a_department_room_loses_it_when_moving_department(org, alice):
    """Reading leaves a read position behind; it must not keep the old department's room in the list."""
    sales, support = factories.department(org), factories.department(org)
    alice.department = sales
    alice.save()
    colleague = talk_person(org, "colleague", department=sales)
    client = client_for(alice)
    room_id = department_room_id(client)
    posted = client_for(colleague).post(
        f"/acme/api/talk/rooms/{room_id}/messages/", {"body": "hello"}, content_type="application/json"
    )
    read = client.post(
        f"/acme/api/talk/rooms/{room_id}/read/", {"last_read_id": posted.json()["id"]}, content_type="application/json"
    )
    assert read.status_code == 200

    alice.department = support
    alice.save()
    assert client.get(f"/acme/api/talk/rooms/{room_id}/").status_code == 404
    assert room_id not in room_ids(client)


def test_department_room_cannot_be_renamed_or_left(org, alice):
    alice.department = factories.department(org)
    alice.save()
    client = client_for(alice)
    room_id = department_room_id(client)
    renamed = client.patch(f"/acme/api/talk/rooms/{room_id}/", {"name": "x"}, content_type="application/json")
    assert renamed.status_code == 403
    left = client.delete(f"/acme/api/talk/rooms/{room_id}/members/{alice.id}/")
    assert left.status_code == 403
    assert client.get(f"/acme/api/talk/rooms/{room_id}/").status_code == 200


# --- who may see what -----------------------------------------------------------------------------------


def test_rooms_of_another_organisation_are_not_found(org, other_org, alice, bob):
    room = create_group(client_for(alice), "g", [bob.id])
    stranger = talk_person(other_org, "stranger")
    client = client_for(stranger)
    for url in (
        f"/globex/api/talk/rooms/{room['id']}/",
        f"/globex/api/talk/rooms/{room['id']}/messages/",
        f"/acme/api/talk/rooms/{room['id']}/",  # under the other organisation's own address
        "/acme/api/talk/rooms/",
    ):
        assert client.get(url).status_code == 404, url
    posted = client.post(
        f"/globex/api/talk/rooms/{room['id']}/messages/", {"body": "x"}, content_type="application/json"
    )
    assert posted.status_code == 404
    joined = client.post(
        f"/globex/api/talk/rooms/{room['id']}/members/", {"person_ids": [stranger.id]}, content_type="application/json"
    )
    assert joined.status_code == 404
    assert not Membership.objects.filter(user=stranger).exists()


def test_non_members_get_not_found_for_everything_in_a_room(org, alice, bob, carol):
    room = create_group(client_for(alice), "g", [bob.id])
    message = (
        client_for(alice)
        .post(f"/acme/api/talk/rooms/{room['id']}/messages/", {"body": "secret"}, content_type="application/json")
        .json()
    )
    client = client_for(carol)
    base = f"/acme/api/talk/rooms/{room['id']}"
    assert client.get(f"{base}/").status_code == 404
    assert client.get(f"{base}/messages/").status_code == 404
    assert client.post(f"{base}/messages/", {"body": "x"}, content_type="application/json").status_code == 404
    assert client.post(f"{base}/read/", {"last_read_id": 1}, content_type="application/json").status_code == 404
    assert client.post(f"{base}/typing/").status_code == 404
    assert client.patch(f"{base}/", {"name": "x"}, content_type="application/json").status_code == 404
    assert (
        client.post(f"{base}/members/", {"person_ids": [carol.id]}, content_type="application/json").status_code == 404
    )
    assert (
        client.patch(
            f"/acme/api/talk/messages/{message['id']}/", {"body": "x"}, content_type="application/json"
        ).status_code
        == 404
    )
    assert client.delete(f"/acme/api/talk/messages/{message['id']}/").status_code == 404
    assert not Membership.objects.filter(user=carol).exists()


def test_every_talk_endpoint_refuses_someone_without_talk(org, alice, bob, employee):
    room = create_group(client_for(alice), "g", [bob.id])
    message = (
        client_for(alice)
        .post(f"/acme/api/talk/rooms/{room['id']}/messages/", {"body": "hi"}, content_type="application/json")
        .json()
    )
    # A member who is switched off keeps no access either.
    User.objects.filter(id=bob.id).update(talk_available=False)
    base = "/acme/api/talk"
    calls = [
        ("get", f"{base}/rooms/", None),
        ("post", f"{base}/rooms/", {"name": "x", "member_ids": []}),
        ("post", f"{base}/rooms/direct/", {"person_id": alice.id}),
        ("get", f"{base}/rooms/{room['id']}/", None),
        ("patch", f"{base}/rooms/{room['id']}/", {"name": "x"}),
        ("post", f"{base}/rooms/{room['id']}/members/", {"person_ids": [alice.id]}),
        ("delete", f"{base}/rooms/{room['id']}/members/{alice.id}/", None),
        ("get", f"{base}/rooms/{room['id']}/messages/", None),
        ("post", f"{base}/rooms/{room['id']}/messages/", {"body": "x"}),
        ("post", f"{base}/rooms/{room['id']}/read/", {"last_read_id": 1}),
        ("post", f"{base}/rooms/{room['id']}/typing/", {}),
        ("patch", f"{base}/messages/{message['id']}/", {"body": "x"}),
        ("delete", f"{base}/messages/{message['id']}/", None),
        ("get", f"{base}/presence/?ids={alice.id}", None),
        ("get", f"{base}/people/", None),
        ("get", f"{base}/files/1/", None),
    ]
    for person in (employee, User.objects.get(id=bob.id)):
        client = client_for(person)
        for method, url, body in calls:
            kwargs = {"content_type": "application/json", "data": body} if body is not None else {}
            response = getattr(client, method)(url, **kwargs)
            assert response.status_code == 403, (person.login_id, method, url, response.status_code)
            assert response.json()["code"] == "talk_unavailable", (method, url)
    assert Room.objects.count() == 1 and Membership.objects.filter(room_id=room["id"]).count() == 2
    # Every talk endpoint for talk users is in the list above (a new one must be added there).
    from django.urls import resolve

    from chat import api_urls
    from chat.api import TalkAPIView

    talk_views = {
        p.name for p in api_urls.urlpatterns if issubclass(getattr(p.callback, "view_class", object), TalkAPIView)
    }
    called = {resolve(url.split("?")[0]).url_name for _, url, _ in calls}
    assert talk_views <= called, talk_views - called
    assert client_for(alice).get(f"{base}/rooms/{room['id']}/messages/").json()["messages"][0]["body"] == "hi"


def test_anonymous_requests_are_refused(org):
    response = Client().get("/acme/api/talk/rooms/")
    assert response.status_code in (401, 403)


def test_people_list_offers_only_talk_users_other_than_oneself(org, alice, bob, employee):
    people = client_for(alice).get("/acme/api/talk/people/").json()
    assert {p["id"] for p in people} == {bob.id}


def test_people_list_finds_talk_users_among_many_who_do_not_use_talk(org, alice):
    """In a large organisation most people may not use talk; the picker must still offer those who do."""
    from django.contrib.auth.hashers import make_password

    password = make_password(None)
    User.objects.bulk_create(
        [
            User(organization=org, login_id=f"a{n:03d}", last_name="姓", first_name=f"{n}", password=password)
            for n in range(210)
        ]
    )
    late = talk_person(org, "zzz-talk")  # sorts after all of them
    people = client_for(alice).get("/acme/api/talk/people/").json()
    assert [p["id"] for p in people] == [late.id]


# --- the talk administrator -----------------------------------------------------------------------------


@pytest.fixture
def talk_admin(org: Any) -> User:
    return factories.person(org, "talkadmin", roles=(Role.ADMIN_GOTALK,))


def test_talk_administrator_reads_and_changes_the_settings(org, talk_admin):
    client = client_for(talk_admin)
    current = client.get("/acme/api/talk/settings/")
    assert current.status_code == 200
    assert current.json()["file_policy"] == FilePolicy.ALL_EXCEPT_EXECUTABLES
    assert current.json()["retention_days"] is None
    changed = client.patch(
        "/acme/api/talk/settings/",
        {"file_policy": "images_only", "retention_days": 30},
        content_type="application/json",
    )
    assert changed.status_code == 200
    assert (changed.json()["file_policy"], changed.json()["retention_days"]) == ("images_only", 30)
    row = TalkSettings.objects.get(organization=org)
    assert (row.file_policy, row.retention_days) == ("images_only", 30)
    assert client.get("/acme/api/talk/settings/").json()["file_policy"] == "images_only"

    cleared = client.patch("/acme/api/talk/settings/", {"retention_days": None}, content_type="application/json")
    assert cleared.json()["retention_days"] is None and cleared.json()["file_policy"] == "images_only"
    bad = client.patch("/acme/api/talk/settings/", {"file_policy": "everything"}, content_type="application/json")
    assert bad.status_code == 400
    assert TalkSettings.objects.get(organization=org).file_policy == "images_only"


def test_talk_administrator_switches_talk_on_and_off(org, talk_admin, alice, employee):
    client = client_for(talk_admin)
    listing = client.get("/acme/api/talk/access/").json()
    rows = {row["id"]: row for row in listing["people"]}
    assert rows[employee.id]["talk_available"] is False and rows[alice.id]["talk_available"] is True
    assert listing["licence"] == {"used": 1, "limit": org.max_talk_users}

    assert client_for(employee).get("/acme/api/talk/rooms/").status_code == 403
    on = client.patch(
        f"/acme/api/talk/access/{employee.id}/", {"talk_available": True}, content_type="application/json"
    )
    assert on.status_code == 200 and on.json()["talk_available"] is True
    assert client_for(employee).get("/acme/api/talk/rooms/").status_code == 200
    assert client.get("/acme/api/talk/access/").json()["licence"]["used"] == 2

    off = client.patch(f"/acme/api/talk/access/{alice.id}/", {"talk_available": False}, content_type="application/json")
    assert off.status_code == 200 and off.json()["talk_available"] is False
    assert client_for(alice).get("/acme/api/talk/rooms/").status_code == 403


def test_talk_administrator_grants_and_revokes_the_right_to_download_logs(org, talk_admin, alice):
    from chat.selectors import may_download_talk_logs

    client = client_for(talk_admin)
    assert not may_download_talk_logs(alice)
    granted = client.patch(
        f"/acme/api/talk/access/{alice.id}/", {"may_download_logs": True}, content_type="application/json"
    )
    assert granted.status_code == 200 and granted.json()["may_download_logs"] is True
    assert may_download_talk_logs(alice)
    rows = {row["id"]: row for row in client.get("/acme/api/talk/access/").json()["people"]}
    assert rows[alice.id]["may_download_logs"] is True
    revoked = client.patch(
        f"/acme/api/talk/access/{alice.id}/", {"may_download_logs": False}, content_type="application/json"
    )
    assert revoked.json()["may_download_logs"] is False
    assert not may_download_talk_logs(alice)


def test_switching_talk_on_beyond_the_licence_is_refused(org, talk_admin, alice, employee):
    org.max_talk_users = 1  # alice already uses the one seat
    org.save()
    client = client_for(talk_admin)
    refused = client.patch(
        f"/acme/api/talk/access/{employee.id}/", {"talk_available": True}, content_type="application/json"
    )
    assert refused.status_code == 400 and refused.json()["code"] == "licence_exceeded"
    assert User.objects.get(id=employee.id).talk_available is False
    # Switching someone off frees the seat.
    client.patch(f"/acme/api/talk/access/{alice.id}/", {"talk_available": False}, content_type="application/json")
    allowed = client.patch(
        f"/acme/api/talk/access/{employee.id}/", {"talk_available": True}, content_type="application/json"
    )
    assert allowed.status_code == 200 and allowed.json()["talk_available"] is True


def test_talk_administration_is_refused_to_everyone_else(org, other_org, talk_admin, alice, admin):
    for person in (alice, admin):  # a talk user, and the system administrator
        client = client_for(person)
        assert client.get("/acme/api/talk/settings/").status_code == 403
        assert (
            client.patch(
                "/acme/api/talk/settings/", {"file_policy": "disabled"}, content_type="application/json"
            ).status_code
            == 403
        )
        assert client.get("/acme/api/talk/access/").status_code == 403
        assert (
            client.patch(
                f"/acme/api/talk/access/{person.id}/", {"may_download_logs": True}, content_type="application/json"
            ).status_code
            == 403
        )
    assert TalkSettings.objects.filter(organization=org, file_policy="disabled").count() == 0
    # Another organisation's talk administrator cannot reach this organisation's people.
    foreign_admin = factories.person(other_org, "foreign", roles=(Role.ADMIN_GOTALK,))
    client = client_for(foreign_admin)
    assert client.get("/acme/api/talk/settings/").status_code == 404
    assert (
        client.patch(
            f"/globex/api/talk/access/{alice.id}/", {"talk_available": False}, content_type="application/json"
        ).status_code
        == 404
    )
    assert User.objects.get(id=alice.id).talk_available is True
