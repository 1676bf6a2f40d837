"""The instruction room (対策室) of an incident: opened over the safety REST API by crisis managers who use talk
(creator an administrator, the chosen people members who may post), joined by a second crisis manager as an
administrator without a second room, refused for people who do not use talk or may not manage incidents; and in
talk, only its administrators add or remove people or rename it, while anyone may leave."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chat.models import Membership, Message, Room, RoomKind
from chat.services import room_instruction_create, room_member_remove, room_members_add
from config.errors import ApplicationError
from directory.models import Organization, Role, User
from safety.models import Incident
from tests import factories
from tests.chat.support import client_for, talk_person
from tests.safety.conftest import incident_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def crisis(org: Organization) -> User:
    return talk_person(org, "crisis", roles=(Role.CRISIS_MANAGER,))


@pytest.fixture
def crisis2(org: Organization) -> User:
    return talk_person(org, "crisis2", roles=(Role.CRISIS_MANAGER,))


@pytest.fixture
def incident(org: Organization, crisis: User) -> Incident:
    return incident_make(org, crisis, title="首都直下地震")


def room_url(incident: Incident) -> str:
    return f"/acme/api/safety/incidents/{incident.id}/room/"


def open_room(client: Client, incident: Incident, member_ids: list[int]) -> Any:
    return client.post(room_url(incident), {"member_ids": member_ids}, content_type="application/json")


def admins(room: Room) -> set[int]:
    return set(Membership.objects.filter(room=room, is_admin=True).values_list("user_id", flat=True))


def members(room: Room) -> set[int]:
    return set(Membership.objects.filter(room=room).values_list("user_id", flat=True))


def room_ids(client: Client) -> list[int]:
    response = client.get("/acme/api/talk/rooms/")
    assert response.status_code == 200, response.content
    return [r["id"] for r in response.json()]


@pytest.fixture
def opened(crisis: User, incident: Incident, alice: User, bob: User) -> Room:
    response = open_room(client_for(crisis), incident, [alice.id, bob.id])
    assert response.status_code == 201, response.content
    return Room.objects.get(id=response.json()["room"]["id"])


# --- Opening it over the safety API ----------------------------------------------------------------------------


def test_a_crisis_manager_opens_the_room_with_the_chosen_people(
    crisis: User,
    incident: Incident,
    alice: User,
    bob: User,
    capture_events: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    client = client_for(crisis)
    assert client.get(room_url(incident)).json() == {"room": None, "can_open": True}
    with django_capture_on_commit_callbacks(execute=True):
        response = open_room(client, incident, [alice.id, bob.id])
    assert response.status_code == 201, response.content
    room = Room.objects.get()
    assert response.json() == {
        "room": {"id": room.id, "name": room.name, "is_member": True, "url": f"/acme/talk/{room.id}/"},
        "can_open": True,
    }
    incident.refresh_from_db()
    assert incident.room == room and room.kind == RoomKind.INSTRUCTION
    assert incident.title in room.name and room.created_by == crisis
    assert members(room) == {crisis.id, alice.id, bob.id} and admins(room) == {crisis.id}
    assert room.members_may_post
    # The chosen people learn of it live.
    added = {e.stream for e in capture_events.of_type("talk.room_added")}
    assert added == {f"user.{alice.id}", f"user.{bob.id}"}
    # The incident's data links it.
    detail = client.get(f"/acme/api/safety/incidents/{incident.id}/").json()
    assert detail["room_id"] == room.id


def test_members_post_and_see_it_in_their_room_list(opened: Room, crisis: User, alice: User, carol: User) -> None:
    alice_client = client_for(alice)
    sent = alice_client.post(
        f"/acme/api/talk/rooms/{opened.id}/messages/",
        {"body": "東棟の被害状況を確認中です"},
        content_type="application/json",
    )
    assert sent.status_code == 201, sent.content
    assert Message.objects.get(room=opened).sender == alice
    listed = {r["id"]: r for r in alice_client.get("/acme/api/talk/rooms/").json()}
    assert listed[opened.id]["kind"] == "instruction" and listed[opened.id]["name"] == opened.name
    assert not listed[opened.id]["is_admin"] and listed[opened.id]["can_post"]
    assert opened.id in room_ids(client_for(crisis))
    assert opened.id not in room_ids(client_for(carol))
    assert client_for(carol).get(f"/acme/api/talk/rooms/{opened.id}/").status_code == 404


def test_a_second_crisis_manager_joins_as_administrator_and_adds_people(
    opened: Room, crisis: User, crisis2: User, incident: Incident, alice: User, bob: User, carol: User
) -> None:
    client = client_for(crisis2)
    before = client.get(room_url(incident)).json()
    assert before == {"room": {"id": opened.id, "name": opened.name, "is_member": False, "url": None}, "can_open": True}
    response = open_room(client, incident, [carol.id, alice.id])
    assert response.status_code == 200, response.content
    assert response.json()["room"] == {
        "id": opened.id,
        "name": opened.name,
        "is_member": True,
        "url": f"/acme/talk/{opened.id}/",
    }
    assert Room.objects.filter(kind=RoomKind.INSTRUCTION).count() == 1
    assert members(opened) == {crisis.id, crisis2.id, alice.id, bob.id, carol.id}
    assert admins(opened) == {crisis.id, crisis2.id}
    # Opening again with nobody new changes nothing and still answers 200.
    again = open_room(client_for(crisis), incident, [])
    assert again.status_code == 200 and again.json()["room"]["id"] == opened.id
    assert admins(opened) == {crisis.id, crisis2.id}


def test_someone_who_does_not_use_talk_is_a_clear_400_and_nothing_changes(
    org: Organization, crisis: User, crisis2: User, incident: Incident, alice: User
) -> None:
    offline = factories.person(org, "no-talk")
    foreign = talk_person(factories.organization(), "foreign")
    for ids in ([alice.id, offline.id], [foreign.id]):
        response = open_room(client_for(crisis), incident, ids)
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "not_talk_users" and response.json()["message"]
    assert not Room.objects.exists()
    incident.refresh_from_db()
    assert incident.room is None

    assert open_room(client_for(crisis), incident, [alice.id]).status_code == 201
    room = Room.objects.get()
    response = open_room(client_for(crisis2), incident, [offline.id])
    assert response.status_code == 400 and response.json()["code"] == "not_talk_users"
    assert members(room) == {crisis.id, alice.id} and admins(room) == {crisis.id}  # crisis2 was not kept either


def test_a_crisis_manager_without_talk_cannot_open_it(org: Organization, incident: Incident, alice: User) -> None:
    no_talk = factories.person(org, "crisis-no-talk", roles=(Role.CRISIS_MANAGER,))
    response = open_room(client_for(no_talk), incident, [alice.id])
    assert response.status_code == 400 and response.json()["code"] == "not_talk_users"
    assert not Room.objects.exists()


@pytest.mark.parametrize("role", [Role.MANAGER, Role.DEPARTMENT_MANAGER, None])
def test_people_who_do_not_manage_incidents_cannot_open_it(
    org: Organization,
    opened: Room,
    crisis: User,
    incident: Incident,
    alice: User,
    bob: User,
    carol: User,
    role: Role | None,
) -> None:
    department = factories.department(org, "DEPT")
    person = talk_person(org, "viewer", roles=(role,) if role else (), department=department)
    client = client_for(person)
    response = open_room(client, incident, [carol.id])
    assert response.status_code == 403, response.content
    assert members(opened) == {crisis.id, alice.id, bob.id}
    shown = client.get(room_url(incident))
    if role is None:
        assert shown.status_code == 403
    else:  # they see the results, so they see that there is a room, without a way in
        assert shown.json() == {
            "room": {"id": opened.id, "name": opened.name, "is_member": False, "url": None},
            "can_open": False,
        }
    # A member without a results role learns of the room in talk, not here.
    assert client_for(alice).get(room_url(incident)).status_code == 403


def test_another_organisations_incident_is_404(other_org: Organization, crisis: User, alice: User) -> None:
    foreign_crisis = talk_person(other_org, "g-crisis", roles=(Role.CRISIS_MANAGER,))
    foreign = incident_make(other_org, foreign_crisis)
    assert open_room(client_for(crisis), foreign, [alice.id]).status_code == 404
    assert client_for(crisis).get(room_url(foreign)).status_code == 404
    assert not Room.objects.exists()


# --- The room's rules in talk ----------------------------------------------------------------------------------


def test_an_ordinary_member_cannot_add_remove_or_rename(opened: Room, alice: User, bob: User, carol: User) -> None:
    client = client_for(alice)
    detail = client.get(f"/acme/api/talk/rooms/{opened.id}/").json()
    assert not detail["can_manage"] and not detail["can_add_members"]
    add = client.post(
        f"/acme/api/talk/rooms/{opened.id}/members/", {"person_ids": [carol.id]}, content_type="application/json"
    )
    assert add.status_code == 403 and add.json()["code"] == "not_room_admin"
    remove = client.delete(f"/acme/api/talk/rooms/{opened.id}/members/{bob.id}/")
    assert remove.status_code == 403 and remove.json()["code"] == "not_room_admin"
    rename = client.patch(f"/acme/api/talk/rooms/{opened.id}/", {"name": "乗っ取り"}, content_type="application/json")
    assert rename.status_code == 403 and rename.json()["code"] == "not_room_admin"
    opened.refresh_from_db()
    assert carol.id not in members(opened) and bob.id in members(opened) and opened.name != "乗っ取り"


def test_an_administrator_adds_removes_and_renames_and_anyone_may_leave(
    opened: Room, crisis: User, alice: User, bob: User, carol: User
) -> None:
    client = client_for(crisis)
    detail = client.get(f"/acme/api/talk/rooms/{opened.id}/").json()
    assert detail["can_manage"] and detail["can_add_members"] and detail["kind"] == "instruction"
    add = client.post(
        f"/acme/api/talk/rooms/{opened.id}/members/", {"person_ids": [carol.id]}, content_type="application/json"
    )
    assert add.status_code == 200, add.content
    assert carol.id in {m["id"] for m in add.json()["members"]}
    assert opened.id in room_ids(client_for(carol))
    assert client.delete(f"/acme/api/talk/rooms/{opened.id}/members/{bob.id}/").status_code == 204
    assert bob.id not in members(opened)
    assert client_for(bob).get(f"/acme/api/talk/rooms/{opened.id}/").status_code == 404
    rename = client.patch(f"/acme/api/talk/rooms/{opened.id}/", {"name": "対策本部"}, content_type="application/json")
    assert rename.status_code == 200 and rename.json()["name"] == "対策本部"
    # An ordinary member leaves.
    alice_client = client_for(alice)
    assert alice_client.delete(f"/acme/api/talk/rooms/{opened.id}/members/{alice.id}/").status_code == 204
    assert opened.id not in room_ids(alice_client)
    assert members(opened) == {crisis.id, carol.id} and admins(opened) == {crisis.id}


def test_when_the_last_administrator_leaves_only_someone_who_manages_incidents_takes_over(
    opened: Room, crisis: User, crisis2: User, alice: User, bob: User, incident: Incident
) -> None:
    """Ordinary chosen members never end up administering the room; a crisis manager among them does."""
    assert client_for(crisis).delete(f"/acme/api/talk/rooms/{opened.id}/members/{crisis.id}/").status_code == 204
    assert admins(opened) == set() and members(opened) == {alice.id, bob.id}
    assert (
        client_for(alice)
        .post(
            f"/acme/api/talk/rooms/{opened.id}/members/", {"person_ids": [crisis.id]}, content_type="application/json"
        )
        .status_code
        == 403
    )
    # A crisis manager opens it from the board again: they administer it.
    assert open_room(client_for(crisis2), incident, []).status_code == 200
    assert admins(opened) == {crisis2.id}
    # When crisis2 leaves too, the longest-standing members (alice, bob) are still not promoted.
    assert client_for(crisis2).delete(f"/acme/api/talk/rooms/{opened.id}/members/{crisis2.id}/").status_code == 204
    assert admins(opened) == set()


def test_a_remaining_crisis_manager_takes_over(opened: Room, crisis: User, crisis2: User, incident: Incident) -> None:
    Membership.objects.create(room=opened, user=crisis2)
    assert client_for(crisis).delete(f"/acme/api/talk/rooms/{opened.id}/members/{crisis.id}/").status_code == 204
    assert admins(opened) == {crisis2.id}


def test_services_hold_the_same_rules(org: Organization, alice: User, bob: User, carol: User) -> None:
    room = room_instruction_create(creator=alice, name="対策室", member_ids=[bob.id])
    with pytest.raises(ApplicationError) as raised:
        room_members_add(actor=bob, room=room, member_ids=[carol.id])
    assert raised.value.status == 403 and raised.value.code == "not_room_admin"
    with pytest.raises(ApplicationError) as raised:
        room_member_remove(actor=bob, room=room, member=alice)
    assert raised.value.status == 403
    room_members_add(actor=alice, room=room, member_ids=[carol.id])
    room_member_remove(actor=carol, room=room, member=carol)
    assert members(room) == {alice.id, bob.id}
    with pytest.raises(ApplicationError) as raised:
        room_instruction_create(creator=alice, name="  ", member_ids=[])
    assert raised.value.code == "name_required"


def test_group_rooms_keep_letting_any_member_add_people(alice: User, bob: User, carol: User) -> None:
    created = client_for(alice).post(
        "/acme/api/talk/rooms/", {"name": "雑談", "member_ids": [bob.id]}, content_type="application/json"
    )
    assert created.status_code == 201
    add = client_for(bob).post(
        f"/acme/api/talk/rooms/{created.json()['id']}/members/",
        {"person_ids": [carol.id]},
        content_type="application/json",
    )
    assert add.status_code == 200, add.content


def test_a_crisis_manager_who_was_an_ordinary_member_becomes_an_administrator(
    crisis: User, crisis2: User, incident: Incident, alice: User
) -> None:
    assert open_room(client_for(crisis), incident, [crisis2.id, alice.id]).status_code == 201
    room = Room.objects.get()
    assert admins(room) == {crisis.id}
    response = open_room(client_for(crisis2), incident, [])
    assert response.status_code == 200 and response.json()["room"]["is_member"]
    assert admins(room) == {crisis.id, crisis2.id} and members(room) == {crisis.id, crisis2.id, alice.id}
    assert Membership.objects.filter(room=room).count() == 3
