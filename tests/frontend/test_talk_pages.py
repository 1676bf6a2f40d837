"""Talk pages through the Django test client: the room list and an open room (Japanese and English), 404 for
people without talk and for rooms they may not see, the talk administrator's page, the talk logs page, the
"Talk" link in the top bar and the "Talk" button on a directory card."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import translation

from chat import services
from chat.models import Room, RoomKind
from chat.selectors import talk_settings_get
from consumers.models import Stream
from directory.models import Organization, Role, User
from tests import factories
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db


def talker(org: Organization, login_id: str, *, language: str = "ja", roles: tuple[Role, ...] = (), **kw: Any) -> User:
    user = factories.person(org, login_id, language=language, roles=roles, **kw)
    user.talk_available = True
    user.save(update_fields=["talk_available"])
    return user


def page_data(response: Any, element_id: str = "talk-data") -> Any:
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert match, f"no #{element_id} in the page"
    return json.loads(match.group(1))


def in_language(language: str, message: str) -> str:
    with translation.override(language):
        return translation.gettext(message)


@pytest.fixture
def hanako(org: Organization) -> User:
    return talker(org, "hanako")


@pytest.fixture
def ken(org: Organization) -> User:
    return talker(org, "ken", language="en")


@pytest.fixture
def direct(hanako: User, ken: User) -> Room:
    room = services.room_direct_open(user=hanako, other=ken)
    services.message_send(room=room, sender=ken, body="こんにちは https://example.com/a", client_id="c-1")
    return room


@pytest.mark.parametrize("language", ["ja", "en"])
def test_room_list_shows_the_persons_rooms_with_unread_counts(org: Organization, direct: Room, language: str) -> None:
    viewer = User.objects.get(login_id="hanako")
    viewer.language = language
    viewer.save(update_fields=["language"])
    response = signed_in(viewer).get("/acme/talk/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<html lang="{language}">' in html
    assert f'<h1 id="talk-title">{in_language(language, "Talk")}</h1>' in html
    assert in_language(language, "New 1:1") in html and in_language(language, "New group") in html
    data = page_data(response)
    assert data["me"] == {"id": viewer.id, "name": viewer.display_name}
    assert data["room"] is None
    [room] = data["rooms"]
    assert room["id"] == direct.id and room["name"] == User.objects.get(login_id="ken").display_name
    assert room["unread"] == 1
    assert room["last_message"]["body"].startswith("こんにちは")
    assert room["url"] == f"/acme/talk/{direct.id}/"
    # The stream's sequence number comes with the data, so the page follows it from there.
    assert data["seqs"] == {f"room.{direct.id}": Stream.objects.get(key=f"room.{direct.id}").last_seq}
    texts = page_data(response, "talk-texts")
    assert texts["deleted"] == in_language(language, "This message was deleted")
    assert texts["read"] == in_language(language, "Read")


@pytest.mark.parametrize("language", ["ja", "en"])
def test_room_page_opens_the_room_with_messages_members_and_read_positions(
    org: Organization, hanako: User, ken: User, direct: Room, language: str
) -> None:
    ken.language = language
    ken.save(update_fields=["language"])
    response = signed_in(ken).get(f"/acme/talk/{direct.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<h2 id="room-name">{hanako.display_name}</h2>' in html
    assert in_language(language, "Enter sends; Shift+Enter starts a new line.") in html
    room = page_data(response)["room"]
    assert room["id"] == direct.id and room["kind"] == RoomKind.DIRECT
    assert [m["body"] for m in room["messages"]] == ["こんにちは https://example.com/a"]
    assert room["has_more"] is False
    assert {m["id"] for m in room["members"]} == {hanako.id, ken.id}
    assert room["read"] == {str(hanako.id): 0, str(ken.id): room["messages"][0]["id"]}


def test_history_is_paged_and_the_group_room_has_its_settings(org: Organization, hanako: User, ken: User) -> None:
    room = services.room_group_create(creator=hanako, name="防災チーム", member_ids=[ken.id])
    for n in range(35):
        services.message_send(room=room, sender=ken, body=f"message {n}")
    response = signed_in(hanako).get(f"/acme/talk/{room.id}/")
    data = page_data(response)["room"]
    assert len(data["messages"]) == 30 and data["has_more"] is True
    assert data["messages"][-1]["body"] == "message 34"
    html = response.content.decode()
    assert 'id="dlg-settings"' in html and 'id="rename-form"' in html  # the creator administers it
    assert 'id="leave"' in html
    # A member who is not an administrator adds people but does not rename.
    html = signed_in(ken).get(f"/acme/talk/{room.id}/").content.decode()
    assert 'id="add-form"' in html and 'id="rename-form"' not in html


def test_people_without_talk_get_the_404_page(org: Organization, direct: Room) -> None:
    outsider = factories.person(org, "jiro")
    client = signed_in(outsider)
    for path in ("/acme/talk/", f"/acme/talk/{direct.id}/"):
        response = client.get(path)
        assert response.status_code == 404
        assert in_language("ja", "Not found") in response.content.decode()
    assert client.post(f"/acme/talk/with/{User.objects.get(login_id='hanako').id}/").status_code == 404


def test_rooms_of_others_and_of_other_organisations_are_not_found(
    org: Organization, other_org: Organization, hanako: User, ken: User
) -> None:
    third = talker(org, "sachiko")
    theirs = services.room_direct_open(user=ken, other=third)
    stranger = talker(other_org, "globex-1")
    elsewhere = services.room_group_create(
        creator=stranger, name="Globex", member_ids=[talker(other_org, "globex-2").id]
    )
    client = signed_in(hanako)
    assert client.get(f"/acme/talk/{theirs.id}/").status_code == 404
    assert client.get(f"/acme/talk/{elsewhere.id}/").status_code == 404
    assert client.get("/acme/talk/999999/").status_code == 404
    # Nor through another organisation's address.
    assert client.get(f"/globex/talk/{elsewhere.id}/").status_code == 404


def test_talk_admin_page_is_for_talk_administrators_only(org: Organization, hanako: User) -> None:
    talk_admin = factories.person(org, "talk-admin", roles=(Role.ADMIN_GOTALK,), language="en")
    response = signed_in(talk_admin).get("/acme/talk/admin/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Talk administration</h1>" in html
    for value in ("all_except_executables", "images_only", "disabled"):
        assert f'value="{value}"' in html
    assert 'value="all_except_executables" checked' in html
    assert 'value="forever" checked' in html
    assert "1 of 1000 talk licences in use" in html
    assert page_data(response, "talk-settings")["retention_days"] is None
    # Everyone else, system administrators included, finds nothing here.
    for other in (hanako, factories.person(org, "sysadmin", roles=(Role.SYSTEM_ADMIN,))):
        assert signed_in(other).get("/acme/talk/admin/").status_code == 404


def test_talk_logs_page_for_talk_administrators_and_permitted_downloaders(org: Organization, hanako: User) -> None:
    talk_admin = factories.person(org, "talk-admin", roles=(Role.ADMIN_GOTALK,))
    downloader = talker(org, "auditor")
    talk_settings_get(organization=org).log_downloaders.add(downloader)
    for person in (talk_admin, downloader):
        response = signed_in(person).get("/acme/talk/logs/")
        assert response.status_code == 200
        assert f"<h1>{in_language('ja', 'Talk logs')}</h1>" in response.content.decode()
    assert signed_in(hanako).get("/acme/talk/logs/").status_code == 404
    # The room list links to it for those who may download, and to the administration for administrators.
    html = signed_in(downloader).get("/acme/talk/").content.decode()
    assert 'href="/acme/talk/logs/"' in html and 'href="/acme/talk/admin/"' not in html
    assert 'href="/acme/talk/logs/"' not in signed_in(hanako).get("/acme/talk/").content.decode()


def test_top_bar_links_to_talk_only_for_talk_users(org: Organization, hanako: User) -> None:
    assert 'href="/acme/talk/"' in signed_in(hanako).get("/acme/home/").content.decode()
    page = signed_in(hanako).get("/acme/talk/").content.decode()
    assert re.search(r'<a href="/acme/talk/" aria-current="page">', page)
    assert "/acme/talk/" not in signed_in(factories.person(org, "jiro")).get("/acme/home/").content.decode()
    # A talk administrator who does not talk themselves reaches the administration from the bar.
    admin_only = factories.person(org, "talk-admin", roles=(Role.ADMIN_GOTALK,))
    html = signed_in(admin_only).get("/acme/home/").content.decode()
    assert 'href="/acme/talk/admin/"' in html and 'href="/acme/talk/"' not in html


def test_directory_card_talk_button_opens_the_direct_room(org: Organization, hanako: User, ken: User) -> None:
    client = signed_in(hanako)
    html = client.get(f"/acme/directory/people/{ken.id}/").content.decode()
    assert f'action="/acme/talk/with/{ken.id}/"' in html
    # Not on one's own card, nor for someone who does not use talk.
    assert "/talk/with/" not in client.get(f"/acme/directory/people/{hanako.id}/").content.decode()
    jiro = factories.person(org, "jiro")
    assert "/talk/with/" not in client.get(f"/acme/directory/people/{jiro.id}/").content.decode()
    # Nor for a viewer who does not use talk.
    assert "/talk/with/" not in signed_in(jiro).get(f"/acme/directory/people/{ken.id}/").content.decode()

    response = client.post(f"/acme/talk/with/{ken.id}/")
    room = Room.objects.get(kind=RoomKind.DIRECT)
    assert response.status_code == 302 and response["Location"] == f"/acme/talk/{room.id}/"
    # The same room the second time; GET does not create anything.
    assert client.post(f"/acme/talk/with/{ken.id}/")["Location"] == f"/acme/talk/{room.id}/"
    assert client.get(f"/acme/talk/with/{ken.id}/").status_code == 405
    # Someone who does not use talk: back to their card with the reason.
    response = client.post(f"/acme/talk/with/{jiro.id}/", follow=True)
    assert response.redirect_chain[-1][0] == f"/acme/directory/people/{jiro.id}/"
    assert Room.objects.count() == 1


def test_department_room_is_listed_for_its_members(org: Organization) -> None:
    department = factories.department(org)
    member = talker(org, "member", department=department)
    data = page_data(signed_in(member).get("/acme/talk/"))
    assert [(r["kind"], r["name"]) for r in data["rooms"]] == [("department", department.name)]


def test_signed_out_visitors_are_sent_to_sign_in(org: Organization) -> None:
    response = Client().get("/acme/talk/")
    assert response.status_code == 302 and response["Location"].startswith("/acme/?next=")
