"""The contact verification API (連絡先の確認) around the run: who may start, read and send again (department
managers their subtree only, members nothing), the link endpoints a test notification uses without signing in
(confirm is idempotent, receipts only move forward, a bad or foreign token is 404), bad input is a clear 4xx
that changes nothing and never a 500, and the directory's problem badge: administrators get it in the API and the
page, members never see it."""

from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

import pytest
from django.test import Client

from consumers.models import MailAddressState
from directory.models import Organization, Role, User
from safety import checks
from safety.models import ContactCheck, ContactCheckDelivery, ContactCheckPerson, Recipient
from safety.tokens import answer_token
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import Tree, safety_person

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(org: Organization, tree: Tree) -> dict[str, User]:
    made = {
        "admin": factories.person(org, "sysadmin", roles=(Role.SYSTEM_ADMIN,)),
        "anpi": factories.person(org, "anpi", roles=(Role.ADMIN_ANPI,)),
        "crisis": factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,)),
        "manager": factories.person(org, "manager", roles=(Role.MANAGER,)),
        "sales_manager": factories.person(org, "bucho", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales),
        "member": safety_person(org, "member", department=tree.east),
        "east": safety_person(org, "east", department=tree.east, email=""),
        "plant": safety_person(org, "plant", department=tree.plant, email="plant@acme.example"),
    }
    MailAddressState.objects.create(address="plant@acme.example", failing=True)
    return made


@pytest.fixture
def check(org: Organization, people: dict[str, User]) -> ContactCheck:
    made = checks.check_start(organization=org, actor=people["anpi"])
    return made


def post(client: Client, path: str, body: Any = None) -> Any:
    return client.post(path, json.dumps(body if body is not None else {}), content_type="application/json")


def link(check: ContactCheck, person: User, action: str, *, slug: str = "acme") -> str:
    token = checks.check_token(organization_id=check.organization_id, check_id=check.id, person_id=person.id)
    return checks.check_api_path(slug=slug, token=token, action=action)


@pytest.mark.parametrize("role", ["admin", "anpi", "crisis"])
def test_administrators_start_checks(org: Organization, people: dict[str, User], role: str) -> None:
    response = post(signed_in(people[role]), "/acme/api/safety/checks/")
    assert response.status_code == 201, response.content
    assert response.json()["people"] == 3 and response.json()["running"] is True


@pytest.mark.parametrize("role", ["manager", "sales_manager", "member"])
def test_others_cannot_start_send_again_or_schedule(check: ContactCheck, people: dict[str, User], role: str) -> None:
    client = signed_in(people[role])
    assert post(client, "/acme/api/safety/checks/").status_code == 403
    assert post(client, f"/acme/api/safety/checks/{check.id}/resend/").status_code == 403
    put = client.put("/acme/api/safety/checks/schedule/", {"every_days": 1}, content_type="application/json")
    assert put.status_code == 403
    assert ContactCheck.objects.count() == 1 and ContactCheck.objects.get().round == 1


def test_members_see_nothing_of_checks(check: ContactCheck, people: dict[str, User]) -> None:
    client = signed_in(people["member"])
    for path in (
        "/acme/api/safety/checks/",
        f"/acme/api/safety/checks/{check.id}/",
        "/acme/api/safety/checks/schedule/",
    ):
        assert client.get(path).status_code == 403, path
    assert Client().get("/acme/api/safety/checks/").status_code in (401, 403)


def test_department_managers_see_their_subtree_only(check: ContactCheck, people: dict[str, User]) -> None:
    client = signed_in(people["sales_manager"])
    data = client.get(f"/acme/api/safety/checks/{check.id}/?problem=all").json()
    assert {p["id"] for p in data["people"]} == {people["member"].id, people["east"].id}
    assert data["counts"]["total"] == 2 and data["check"]["people"] == 2
    assert client.get("/acme/api/safety/checks/").json()[0]["people"] == 2
    # A department outside their subtree filters to nobody, never to someone else's people.
    plant = people["plant"].department_id
    assert client.get(f"/acme/api/safety/checks/{check.id}/?problem=all&department={plant}").json()["people"] == []
    everyone = signed_in(people["manager"]).get(f"/acme/api/safety/checks/{check.id}/?problem=all").json()
    assert everyone["counts"]["total"] == 3


@pytest.mark.parametrize(
    "query", ["?problem=nope", "?department=abc", "?department=0", "?department=999999", "?department=" + "1" * 19]
)
def test_a_bad_filter_is_400(check: ContactCheck, people: dict[str, User], query: str) -> None:
    response = signed_in(people["anpi"]).get(f"/acme/api/safety/checks/{check.id}/{query}")
    assert response.status_code == 400 and response.json()["code"] == "bad_filter"


@pytest.mark.parametrize("body", [{"problems": ["nope"]}, {"problems": "no_push"}, {"problems": [1]}, [], "x"])
def test_a_bad_resend_is_400_and_changes_nothing(check: ContactCheck, people: dict[str, User], body: Any) -> None:
    checks.contact_check_run(check_id=check.id)
    response = post(signed_in(people["anpi"]), f"/acme/api/safety/checks/{check.id}/resend/", body)
    assert response.status_code == 400, response.content
    assert ContactCheck.objects.get().round == 1
    assert set(ContactCheckDelivery.objects.values_list("round", flat=True)) == {1}


def test_another_organisations_check_is_404(
    check: ContactCheck, people: dict[str, User], other_org: Organization
) -> None:
    outsider = factories.person(other_org, "globex-admin", roles=(Role.ADMIN_ANPI,))
    client = signed_in(outsider)
    assert client.get(f"/acme/api/safety/checks/{check.id}/").status_code == 404
    assert client.get(f"/globex/api/safety/checks/{check.id}/").status_code == 404
    assert post(client, f"/globex/api/safety/checks/{check.id}/resend/").status_code == 404
    assert signed_in(people["anpi"]).get("/acme/api/safety/checks/99999999/").status_code == 404


# --- The link endpoints ---------------------------------------------------------------------------------------


def test_confirm_by_link_is_idempotent_and_needs_no_session(check: ContactCheck, people: dict[str, User]) -> None:
    member = people["member"]
    client = Client(enforce_csrf_checks=True)
    first = post(client, link(check, member, "confirm"), {"via": "mail"})
    assert first.status_code == 200, first.content
    assert first.json()["confirmed"] is True and first.json()["confirmed_via"] == "email"
    second = post(client, link(check, member, "confirm"), {"via": "push", "quick": True, "client_key": "k"})
    assert second.status_code == 200 and second.json() == first.json()
    row = ContactCheckPerson.objects.get(check_run=check, person=member)
    assert row.confirmed_via == "email"
    assert ContactCheckDelivery.objects.get(check_run=check, person=member, channel="email").state == "answered"


def test_confirming_by_mail_clears_the_one_address_it_proves(check: ContactCheck, people: dict[str, User]) -> None:
    assert post(Client(), link(check, people["plant"], "confirm"), {"via": "mail"}).status_code == 200
    assert MailAddressState.objects.get(address="plant@acme.example").failing is False


def test_receipts_only_move_forward(check: ContactCheck, people: dict[str, User]) -> None:
    member = people["member"]
    path = link(check, member, "receipt")
    checks.contact_check_run(check_id=check.id)
    assert post(Client(), path, {"event": "opened", "channel": "email"}).json() == {"state": "opened"}
    assert post(Client(), path, {"event": "delivered", "channel": "email"}).json() == {"state": "opened"}
    delivery = ContactCheckDelivery.objects.get(check_run=check, person=member, channel="email")
    assert delivery.opened_at is not None and delivery.delivered_at is not None
    opened_at = delivery.opened_at
    post(Client(), path, {"event": "opened", "channel": "email"})
    delivery.refresh_from_db()
    assert delivery.opened_at == opened_at  # set once


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"event": "read"}, 400),
        ({"event": "opened", "channel": "sms"}, 400),
        ({"event": "opened", "channel": "inapp"}, 400),
        ({"event": "opened", "channel": "push"}, 404),  # member has no push row
        ({}, 400),
        ([], 400),
        ("x", 400),
    ],
)
def test_bad_receipts(check: ContactCheck, people: dict[str, User], body: Any, status: int) -> None:
    response = post(Client(), link(check, people["member"], "receipt"), body)
    assert response.status_code == status, response.content
    assert ContactCheckDelivery.objects.get(check_run=check, person=people["member"]).state == "queued"


@pytest.mark.parametrize("action", ["confirm", "receipt"])
def test_bad_tokens_are_404(org: Organization, check: ContactCheck, people: dict[str, User], action: str) -> None:
    member = people["member"]
    good = checks.check_token(organization_id=org.id, check_id=check.id, person_id=member.id)
    answer = answer_token(organization_id=org.id, incident_id=check.id, person_id=member.id)  # another salt
    other = checks.check_token(organization_id=org.id + 1000, check_id=check.id, person_id=member.id)
    body = {"via": "push", "event": "delivered"}
    for token in (good[:-2] + "xx", answer, other, "short", "x" * 400, good + "/../"):
        response = post(Client(), f"/acme/api/safety/checks/link/{token}/{action}/", body)
        assert response.status_code == 404, (token, response.content)
    # The right token under another organisation's address.
    factories.organization(slug="globex")
    assert post(Client(), checks.check_api_path(slug="globex", token=good, action=action), body).status_code == 404
    # Expired.
    with mock.patch("django.core.signing.time.time", return_value=time.time() + 15 * 24 * 3600):
        assert post(Client(), checks.check_api_path(slug="acme", token=good, action=action), body).status_code == 404
    # Someone who left since.
    User.objects.filter(id=member.id).update(is_active=False)
    assert post(Client(), checks.check_api_path(slug="acme", token=good, action=action), body).status_code == 404
    assert not ContactCheckPerson.objects.filter(confirmed_at__isnull=False).exists()


@pytest.mark.parametrize("body", [{"via": "sms"}, {"via": 1}, [], "x"])
def test_a_bad_confirm_is_400(check: ContactCheck, people: dict[str, User], body: Any) -> None:
    response = post(Client(), link(check, people["member"], "confirm"), body)
    assert response.status_code == 400, response.content
    assert not ContactCheckPerson.objects.filter(confirmed_at__isnull=False).exists()


def test_an_answer_link_api_does_not_take_a_check_token(check: ContactCheck, people: dict[str, User]) -> None:
    token = checks.check_token(organization_id=check.organization_id, check_id=check.id, person_id=people["member"].id)
    response = post(Client(), f"/acme/api/safety/answer/{token}/", {"values": {"safety": "safe"}})
    assert response.status_code == 404


# --- The directory badge ------------------------------------------------------------------------------------


def test_administrators_see_the_problem_badge_members_never(check: ContactCheck, people: dict[str, User]) -> None:
    east, plant = people["east"], people["plant"]
    admin = signed_in(people["admin"])
    rows = {r["id"]: r for r in admin.get("/acme/api/directory/people/").json()["results"]}
    assert rows[east.id]["contact_problems"] == ["no_contact"]
    assert rows[plant.id]["contact_problems"] == ["no_push", "email_bounced", "not_confirmed"]
    assert rows[people["anpi"].id]["contact_problems"] == []  # not a safety-confirmation user: nothing to check
    card = admin.get(f"/acme/api/directory/people/{plant.id}/").json()
    assert card["contact_problems"] == ["no_push", "email_bounced", "not_confirmed"]
    page = admin.get("/acme/directory/").content.decode()
    assert 'class="contact-badge"' in page
    assert 'class="contact-badge"' in admin.get(f"/acme/directory/people/{plant.id}/").content.decode()

    member = signed_in(people["member"])
    rows = member.get("/acme/api/directory/people/").json()["results"]
    assert rows and all("contact_problems" not in r for r in rows)
    assert "contact_problems" not in member.get(f"/acme/api/directory/people/{plant.id}/").json()
    for path in ("/acme/directory/", f"/acme/directory/people/{plant.id}/", "/acme/directory/?q=plant"):
        html = member.get(path).content.decode()
        assert "contact-badge" not in html and "contact_problems" not in html and "person-contact" not in html


def test_a_department_manager_sees_badges_in_their_subtree_only(check: ContactCheck, people: dict[str, User]) -> None:
    rows = {r["id"]: r for r in signed_in(people["sales_manager"]).get("/acme/api/directory/people/").json()["results"]}
    assert rows[people["east"].id]["contact_problems"] == ["no_contact"]
    assert rows[people["plant"].id]["contact_problems"] == []  # outside their subtree


def test_contact_problems_ignore_other_organisations(
    org: Organization, other_org: Organization, people: dict[str, User]
) -> None:
    stranger = safety_person(other_org, "stranger", email="")
    assert stranger.id not in checks.contact_problems(organization=org)
    assert checks.contact_problems(organization=org, person_ids=[stranger.id]) == {}


def test_an_incident_and_a_check_do_not_mix(org: Organization, people: dict[str, User]) -> None:
    """A check is not an incident: nothing shows on anyone's safety requests."""
    check = checks.check_start(organization=org, actor=people["anpi"])
    checks.contact_check_run(check_id=check.id)
    assert Recipient.objects.count() == 0
    assert signed_in(people["member"]).get("/acme/api/safety/mine/").json() == []
