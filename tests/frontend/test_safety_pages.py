"""The administrators' safety-confirmation pages through the Django test client: the incident list, the
registration form (with the default questions), one incident (status, drill banner, tally, proxy answers with
their source) and the templates page. Each renders for the roles that may see it, in Japanese and English;
employees get the 403 page, people of another organisation the 404 page; a department manager's page carries
only their subtree."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from django.utils import translation

from directory.models import Department, Organization, Role, User
from safety import services
from safety.models import Incident, IncidentStatus
from tests import factories
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db

MANAGING_ROLES = (Role.CRISIS_MANAGER, Role.ADMIN_ANPI)
VIEWING_ROLES = (Role.CRISIS_MANAGER, Role.ADMIN_ANPI, Role.MANAGER, Role.DEPARTMENT_MANAGER)


def page_data(response: Any, element_id: str = "safety-data") -> Any:
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert match, f"no #{element_id} in the page"
    return json.loads(match.group(1))


def tr(language: str, message: str) -> str:
    with translation.override(language):
        return translation.gettext(message)


class World:
    """Tokyo (with Sales under it) and Osaka; a person in each with a safety-confirmation ID, one incident sent
    to everyone; in Sales someone answered "safe", in Osaka a crisis manager entered a proxy answer."""

    def __init__(self, org: Organization) -> None:
        self.org = org
        self.tokyo = factories.department(org, "T")
        self.sales = factories.department(org, "TS", parent=self.tokyo)
        self.osaka = factories.department(org, "O")
        for d, name in ((self.tokyo, "東京本社"), (self.sales, "営業部"), (self.osaka, "大阪支社")):
            d.name = name
            d.save(update_fields=["name"])
        self.crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,), department=self.tokyo)
        self.sato = factories.person(org, "sato", department=self.sales, anpi_login_id="sato")
        self.kato = factories.person(org, "kato", department=self.osaka, anpi_login_id="kato")
        self.incident = services.incident_create(
            organization=org, actor=self.crisis, title="関東で震度6強", message="安否を回答してください。"
        )
        services.dispatch_create(incident=self.incident, actor=self.crisis, target={"mode": "everyone"})
        services.answer_submit(
            incident_id=self.incident.id, person=self.sato, values={"safety": "safe", "help": "no"}, source="app"
        )
        self.incident.refresh_from_db()
        services.proxy_answer_submit(
            incident=self.incident,
            actor=self.crisis,
            person=self.kato,
            values={"safety": "minor", "help": "yes"},
            note="電話で確認",
            scope=None,
        )

    def person(self, *roles: Role, department: Department | None = None, language: str = "ja") -> User:
        return factories.person(self.org, roles=roles, department=department, language=language)


@pytest.fixture
def world(org: Organization) -> World:
    return World(org)


def urls(incident: Incident) -> list[str]:
    return [
        "/acme/safety/incidents/",
        "/acme/safety/incidents/new/",
        f"/acme/safety/incidents/{incident.id}/",
        f"/acme/safety/incidents/{incident.id}/edit/",
        "/acme/safety/templates/",
    ]


# --- Who may see what ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", MANAGING_ROLES)
def test_crisis_managers_and_safety_administrators_see_every_page(world: World, role: Role) -> None:
    client = signed_in(world.person(role))
    for url in urls(world.incident):
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("role", [Role.MANAGER, Role.DEPARTMENT_MANAGER])
def test_managers_see_results_but_cannot_register_send_or_edit_templates(world: World, role: Role) -> None:
    client = signed_in(world.person(role, department=world.tokyo))
    listing = client.get("/acme/safety/incidents/")
    assert listing.status_code == 200
    assert "/acme/safety/incidents/new/" not in listing.content.decode()
    assert page_data(listing)["can_manage"] is False
    detail = client.get(f"/acme/safety/incidents/{world.incident.id}/")
    assert detail.status_code == 200
    html = detail.content.decode()
    assert 'id="send-panel"' not in html and 'id="complete-button"' not in html
    assert page_data(detail)["incident"]["can_manage"] is False
    for url in (
        "/acme/safety/incidents/new/",
        f"/acme/safety/incidents/{world.incident.id}/edit/",
        "/acme/safety/templates/",
    ):
        assert client.get(url).status_code == 403, url


@pytest.mark.parametrize("role", [(), (Role.SYSTEM_ADMIN,), (Role.ADMIN_GOTALK,)])
def test_people_without_a_safety_role_get_the_403_page(world: World, role: tuple[Role, ...]) -> None:
    client = signed_in(world.person(*role))
    for url in urls(world.incident):
        assert client.get(url).status_code == 403, url


def test_another_organisation_gets_the_404_page(world: World, other_org: Organization) -> None:
    stranger = signed_in(factories.person(other_org, "boss", roles=(Role.CRISIS_MANAGER,)))
    for url in urls(world.incident):
        assert stranger.get(url).status_code == 404, url
    # …and in their own organisation, the other organisation's incident does not exist.
    for url in (
        f"/globex/safety/incidents/{world.incident.id}/",
        f"/globex/safety/incidents/{world.incident.id}/edit/",
    ):
        assert stranger.get(url).status_code == 404, url
    assert stranger.get("/globex/safety/incidents/").status_code == 200


def test_signed_out_people_are_sent_to_sign_in(world: World) -> None:
    response = Client().get(f"/acme/safety/incidents/{world.incident.id}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/acme/?next=")


# --- The list -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["ja", "en"])
def test_list_shows_each_incident_with_its_state_drill_mark_and_counts(
    world: World, org: Organization, language: str
) -> None:
    drill = services.incident_create(
        organization=org, actor=world.crisis, title="避難訓練", message="訓練です。", is_drill=True
    )
    response = signed_in(world.person(Role.CRISIS_MANAGER, language=language)).get("/acme/safety/incidents/")
    html = response.content.decode()
    assert f'<html lang="{language}">' in html
    assert tr(language, "New incident") in html and tr(language, "Templates") in html
    assert "関東で震度6強" in html and "避難訓練" in html
    assert f'class="inc-status inc-sending">{tr(language, "Sending")}<' in html
    assert f'class="inc-status inc-draft">{tr(language, "Draft")}<' in html
    assert tr(language, "Drill") in html
    data = page_data(response)
    by_id = {i["id"]: i for i in data["incidents"]}
    assert by_id[world.incident.id]["recipients"] == 2 and by_id[world.incident.id]["answered"] == 2
    assert by_id[drill.id]["is_drill"] is True and by_id[drill.id]["status_label"] == tr(language, "Draft")
    assert data["labels"]["incident"]["completed"] == tr(language, "Completed")
    assert page_data(response, "safety-texts")["none"] == tr(language, "No safety checks yet.")


# --- The form ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["ja", "en"])
def test_form_starts_with_the_default_questions_and_now_in_japan_time(world: World, language: str) -> None:
    response = signed_in(world.person(Role.ADMIN_ANPI, language=language)).get("/acme/safety/incidents/new/")
    assert response.status_code == 200
    html = response.content.decode()
    assert tr(language, "New incident") in html and tr(language, "Insert from a template") in html
    for text in (
        "あなたの安否",
        "救助・支援が必要ですか",
        "出社できますか",
        "自宅の状況",
        "コメント",
        "無事",
        "軽傷",
        "重傷",
    ):
        assert text in html
    data = page_data(response)
    assert [q["key"] for q in data["default_questions"]] == ["safety", "help", "work", "home", "comment"]
    assert data["incident"] is None and data["utc_offset"] == "+09:00"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", data["now"]["date"]) and re.fullmatch(r"\d{2}:\d{2}", data["now"]["time"])
    assert f'value="{data["now"]["date"]}"' in html
    assert page_data(response, "safety-texts")["kind_single"] == tr(language, "Single choice")


def test_edit_form_carries_the_incident_and_locks_answered_questions(world: World) -> None:
    client = signed_in(world.crisis)
    response = client.get(f"/acme/safety/incidents/{world.incident.id}/edit/")
    data = page_data(response)
    assert data["incident"]["id"] == world.incident.id and data["incident"]["title"] == "関東で震度6強"
    assert data["questions_locked"] is True
    assert "関東で震度6強" in response.content.decode()


def test_a_completed_incident_cannot_be_edited(world: World) -> None:
    services.incident_complete(incident=world.incident, actor=world.crisis)
    response = signed_in(world.crisis).get(f"/acme/safety/incidents/{world.incident.id}/edit/")
    assert response.status_code == 302
    assert response["Location"] == f"/acme/safety/incidents/{world.incident.id}/"


# --- One incident --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["ja", "en"])
def test_detail_shows_status_tally_and_the_proxy_answer_with_its_source(world: World, language: str) -> None:
    response = signed_in(world.person(Role.CRISIS_MANAGER, language=language)).get(
        f"/acme/safety/incidents/{world.incident.id}/"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="incident-status">{tr(language, "Sending")}<' in html
    assert "安否を回答してください。" in html
    assert tr(language, "Send again") in html and tr(language, "Complete") in html
    # The tally: one row per department, and everyone.
    assert "営業部" in html and "大阪支社" in html
    data = page_data(response)
    tally = data["incident"]["tally"]
    assert tally["overall"]["counts"] == {"safe": 1, "minor": 1, "serious": 0, "answered": 0, "none": 0}
    assert tally["overall"]["needs_help"] == 1 and tally["overall"]["total"] == 2
    assert {r["name"]: r["counts"]["safe"] for r in tally["departments"]} == {"営業部": 1, "大阪支社": 0}
    # The proxy answer shows who entered it, how, and the note.
    proxy = next(r for r in data["results"]["results"] if r["person"]["id"] == world.kato.id)
    assert proxy["status"] == "minor" and proxy["needs_help"] is True
    assert proxy["answer"]["source"] == "proxy"
    assert proxy["answer"]["source_label"] == tr(language, "Proxy answer")
    assert proxy["answer"]["entered_by"] == world.crisis.display_name
    assert proxy["answer"]["proxy_note"] == "電話で確認"
    assert tr(language, "Proxy answer") in html and "電話で確認" in html and world.crisis.display_name in html
    assert '<span class="st st-minor">' in html and f'class="help-flag">{tr(language, "Needs help")}<' in html
    # Deliveries, sends, the filters and the proxy form's questions come with the page.
    assert data["incident"]["deliveries"]["inapp"] == {"answered": 2}  # both answered after the send
    assert [d["number"] for d in data["incident"]["dispatches"]] == [1]
    assert {d["name"] for d in data["departments"]} == {"東京本社", "営業部", "大阪支社"}
    assert len(data["prefectures"]) == 47
    assert data["questions"][0]["label"] == ("Are you safe?" if language == "en" else "あなたの安否")
    assert data["labels"]["source"]["proxy"] == tr(language, "Proxy answer")


def test_drill_shows_a_banner(world: World, org: Organization) -> None:
    drill = services.incident_create(organization=org, actor=world.crisis, title="訓練", message="訓練", is_drill=True)
    html = signed_in(world.crisis).get(f"/acme/safety/incidents/{drill.id}/").content.decode()
    assert 'class="drill-banner"' in html
    assert f'id="incident-status">{tr("ja", "Draft")}<' in html
    assert tr("ja", "Open for answers without sending") in html


def test_department_manager_sees_only_their_subtree(world: World) -> None:
    manager = world.person(Role.DEPARTMENT_MANAGER, department=world.tokyo)
    response = signed_in(manager).get(f"/acme/safety/incidents/{world.incident.id}/")
    data = page_data(response)
    assert [r["person"]["id"] for r in data["results"]["results"]] == [world.sato.id]
    assert data["results"]["total"] == 1
    assert [r["name"] for r in data["incident"]["tally"]["departments"]] == ["営業部"]
    assert data["incident"]["tally"]["overall"]["total"] == 1
    assert {d["name"] for d in data["departments"]} == {"東京本社", "営業部"}
    assert data["send_departments"] == []
    html = response.content.decode()
    assert "大阪支社" not in html and world.kato.display_name not in html


def test_completed_incident_hides_sending(world: World) -> None:
    services.incident_complete(incident=world.incident, actor=world.crisis)
    assert Incident.objects.get(id=world.incident.id).status == IncidentStatus.COMPLETED
    html = signed_in(world.crisis).get(f"/acme/safety/incidents/{world.incident.id}/").content.decode()
    assert f'id="incident-status">{tr("ja", "Completed")}<' in html
    assert re.search(r'id="send-panel"[^>]* hidden', html)


# --- Templates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["ja", "en"])
def test_templates_page_lists_the_organisations_templates(
    world: World, org: Organization, other_org: Organization, language: str
) -> None:
    services.template_create(organization=org, name="地震（初報）", title="地震発生", body="安否を回答してください。")
    services.template_create(organization=other_org, name="よその定型文", title="x", body="y")
    response = signed_in(world.person(Role.ADMIN_ANPI, language=language)).get("/acme/safety/templates/")
    html = response.content.decode()
    assert tr(language, "Templates") in html and tr(language, "New template") in html
    assert "地震（初報）" in html and "よその定型文" not in html
    assert [t["name"] for t in page_data(response)["templates"]] == ["地震（初報）"]
