"""Who may do what with the safety REST API under /<slug>/api/safety/: the role matrix, another organisation's
incidents, anonymous callers, and the templates (定型文) and people pickers."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from directory.models import Role
from safety.models import Answer, Dispatch, Incident, IncidentStatus, MessageTemplate
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import incident_make, safety_person, send

pytestmark = pytest.mark.django_db

# (method, path under /<slug>/api/safety/, body). {i}: an incident id, {p}: a person the incident asked.
READ = [
    ("get", "incidents/", None),
    ("get", "incidents/{i}/", None),
    ("get", "incidents/{i}/results/", None),
    ("get", "incidents/{i}/results.csv", None),
    ("get", "incidents/{i}/people/{p}/answers/", None),
]
MANAGE = [
    ("post", "incidents/", {"title": "t", "message": "m", "tally_start_at": "2030-01-01T00:00:00+09:00"}),
    ("patch", "incidents/{i}/", {"title": "changed"}),
    ("post", "incidents/{i}/open/", None),
    ("post", "incidents/{i}/complete/", None),
    ("get", "incidents/{i}/dispatches/", None),
    ("post", "incidents/{i}/dispatches/", {"target": {"mode": "everyone"}}),
    ("post", "incidents/{i}/dispatches/", {"target": {"mode": "everyone"}, "preview": True}),
    ("get", "templates/", None),
    ("post", "templates/", {"name": "地震", "title": "地震発生"}),
    ("get", "people/", None),
]
PROXY = ("post", "incidents/{i}/people/{p}/answers/", {"values": {"safety": "safe"}, "note": "電話"})


def call(client: Client, method: str, path: str, body: Any, *, slug: str = "acme", **ids: int) -> Any:
    url = f"/{slug}/api/safety/" + path.format(**ids)
    if body is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, body, content_type="application/json")


@pytest.fixture
def sent(org, crisis, incident, tree):
    """The incident, sent to someone in the east section (under sales) and someone at the plant."""
    east = safety_person(org, "east", department=tree.east)
    plant = safety_person(org, "plant", department=tree.plant)
    send(incident, crisis, run=False)
    return incident, east, plant


def unchanged(incident: Incident) -> None:
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.SENDING and incident.title != "changed"
    assert Dispatch.objects.filter(incident=incident).count() == 1
    assert Incident.objects.count() == 1 and not MessageTemplate.objects.exists() and not Answer.objects.exists()


@pytest.mark.parametrize("role", [None, Role.SYSTEM_ADMIN, Role.ADMIN_GOTALK])
def test_people_without_a_safety_role_get_403_on_every_admin_endpoint(org, sent, role):
    incident, east, _plant = sent
    person = factories.person(org, "someone", roles=(role,) if role else ())
    client = signed_in(person)
    for method, path, body in [*READ, *MANAGE, PROXY]:
        response = call(client, method, path, body, i=incident.id, p=east.id)
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.json()["code"] == "permission_denied"
    unchanged(incident)


@pytest.mark.parametrize("role", [Role.MANAGER, Role.DEPARTMENT_MANAGER])
def test_managers_read_results_but_cannot_register_send_or_complete(org, sent, tree, role):
    incident, east, _plant = sent
    manager = factories.person(org, "manager", roles=(role,), department=tree.sales)
    client = signed_in(manager)
    for method, path, body in READ:
        response = call(client, method, path, body, i=incident.id, p=east.id)
        assert response.status_code == 200, (method, path, response.status_code)
    for method, path, body in MANAGE:
        response = call(client, method, path, body, i=incident.id, p=east.id)
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.json()["code"] in {"permission_denied", "forbidden"}
    unchanged(incident)
    # but they may enter an answer for someone they reached
    assert call(client, *PROXY, i=incident.id, p=east.id).status_code == 201


def test_a_department_manager_reaches_only_their_subtree(org, sent, tree):
    incident, east, plant = sent
    manager = signed_in(factories.person(org, "manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales))
    for method, path, body in [*READ[-1:], PROXY]:
        assert call(manager, method, path, body, i=incident.id, p=plant.id).status_code == 404
    results = call(manager, "get", "incidents/{i}/results/", None, i=incident.id).json()
    assert [r["person"]["id"] for r in results["results"]] == [east.id]
    csv_text = call(manager, "get", "incidents/{i}/results.csv", None, i=incident.id).content.decode()
    assert "east" in csv_text and "plant" not in csv_text
    assert not Answer.objects.filter(person=plant).exists()


@pytest.mark.parametrize("role", [Role.CRISIS_MANAGER, Role.ADMIN_ANPI])
def test_crisis_managers_and_safety_admins_run_an_incident_over_the_api(org, tree, role):
    safety_person(org, "east", department=tree.east)
    client = signed_in(factories.person(org, "boss", roles=(role,)))
    body = {"title": "地震", "message": "回答を", "tally_start_at": timezone.now().isoformat()}
    created = client.post("/acme/api/safety/incidents/", body, content_type="application/json")
    assert created.status_code == 201, created.content
    incident_id = created.json()["id"]
    assert call(client, "patch", "incidents/{i}/", {"title": "続報"}, i=incident_id).json()["title"] == "続報"
    assert call(client, "post", "incidents/{i}/open/", None, i=incident_id).json()["status"] == "accepting"
    sent = call(client, "post", "incidents/{i}/dispatches/", {"target": {"mode": "everyone"}}, i=incident_id)
    assert sent.status_code == 201 and sent.json()["number"] == 1
    detail = call(client, "get", "incidents/{i}/", None, i=incident_id).json()
    assert detail["can_manage"] and detail["tally"]["overall"]["total"] == 1 and len(detail["dispatches"]) == 1
    assert detail["deliveries"]["inapp"] == {"sent": 1}
    done = call(client, "post", "incidents/{i}/complete/", None, i=incident_id)
    assert done.status_code == 200 and done.json()["status"] == "completed"
    again = call(client, "post", "incidents/{i}/dispatches/", {"target": {"mode": "everyone"}}, i=incident_id)
    assert again.status_code == 409 and again.json()["code"] == "incident_completed"


def test_another_organisations_incident_is_404_on_every_endpoint(org, other_org, crisis_client):
    their_manager = factories.person(other_org, "their-crisis", roles=(Role.CRISIS_MANAGER,))
    theirs = incident_make(other_org, their_manager)
    their_person = safety_person(other_org, "their-person")
    send(theirs, their_manager, run=False)
    for method, path, body in [*READ, *MANAGE, PROXY]:
        if "{i}" not in path:
            continue
        response = call(crisis_client, method, path, body, i=theirs.id, p=their_person.id)
        assert response.status_code == 404, (method, path, response.status_code)
    for method in ("get", "post"):
        assert call(crisis_client, method, f"mine/{theirs.id}/", {"values": {"safety": "safe"}}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == IncidentStatus.SENDING and Dispatch.objects.filter(incident=theirs).count() == 1
    assert not Answer.objects.exists()


def test_our_people_are_404_under_another_organisations_slug(org, other_org, crisis_client, sent):
    incident, east, _plant = sent
    for method, path, body in [*READ, *MANAGE]:
        response = call(crisis_client, method, path, body, slug="globex", i=incident.id, p=east.id)
        assert response.status_code == 404, (method, path, response.status_code)
    assert call(crisis_client, "get", "mine/", None, slug="globex").status_code == 404


def test_anonymous_callers_are_refused_everywhere_but_the_link(org, sent):
    incident, east, _plant = sent
    anonymous = Client()
    for method, path, body in [*READ, *MANAGE, PROXY, ("get", "mine/", None), ("get", "mine/{i}/", None)]:
        response = call(anonymous, method, path, body, i=incident.id, p=east.id)
        assert response.status_code == 403, (method, path, response.status_code)  # as /api/me/ does
        assert response.json()["code"] == "not_authenticated"
    unchanged(incident)


def test_templates_are_searched_changed_and_kept_to_their_organisation(org, other_org, crisis_client):
    made = crisis_client.post(
        "/acme/api/safety/templates/",
        {"name": "地震 初報", "title": "地震が発生しました", "body": "安否を回答してください"},
        content_type="application/json",
    )
    assert made.status_code == 201, made.content
    crisis_client.post(
        "/acme/api/safety/templates/", {"name": "台風", "body": "出社は不要です"}, content_type="application/json"
    )
    assert [t["name"] for t in crisis_client.get("/acme/api/safety/templates/", {"q": "安否"}).json()] == ["地震 初報"]
    assert len(crisis_client.get("/acme/api/safety/templates/").json()) == 2
    empty = crisis_client.post("/acme/api/safety/templates/", {"name": "空"}, content_type="application/json")
    assert empty.status_code == 400 and empty.json()["code"] == "bad_template"
    template_id = made.json()["id"]
    changed = crisis_client.patch(
        f"/acme/api/safety/templates/{template_id}/", {"name": "地震", "title": "続報"}, content_type="application/json"
    )
    assert changed.json()["title"] == "続報" and changed.json()["body"] == ""
    theirs = MessageTemplate.objects.create(organization=other_org, name="theirs", title="x")
    assert (
        crisis_client.patch(
            f"/acme/api/safety/templates/{theirs.id}/", {"name": "mine"}, content_type="application/json"
        ).status_code
        == 404
    )
    assert crisis_client.delete(f"/acme/api/safety/templates/{theirs.id}/").status_code == 404
    assert crisis_client.delete(f"/acme/api/safety/templates/{template_id}/").status_code == 204
    assert MessageTemplate.objects.filter(organization=other_org).count() == 1


def test_people_picker_marks_safety_users_and_lists_administrators(org, crisis, crisis_client):
    user = safety_person(org, "safety-user")
    plain = safety_person(org, "plain", anpi=False)
    everyone = {p["id"]: p for p in crisis_client.get("/acme/api/safety/people/").json()}
    assert everyone[user.id]["safety_user"] and not everyone[plain.id]["safety_user"]
    admins = [p["id"] for p in crisis_client.get("/acme/api/safety/people/", {"admins": "1"}).json()]
    assert admins == [crisis.id]
