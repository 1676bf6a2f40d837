"""Contact verification (連絡先の確認) end to end: a check sent through the local push service (which verifies VAPID
and decrypts) and a real SMTP server (aiosmtpd), each problem code computed from what really happened (a push
endpoint that fails, an address a bounce report marked failing, a person with nothing, one who confirms from the
notification's button through the API and one from the e-mail's page), the counts, sending again to just the
people with problems on just their channels, resuming a run a dead worker left, and the schedule with a
controllable clock."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from consumers.models import MailAddressState, PushSubscription
from directory.models import Organization, PrivateContact, Role, User
from safety import check_tasks, checks
from safety.models import ContactCheck, ContactCheckDelivery, ContactCheckPerson, SafetySettings
from tests import factories
from tests.conftest import SmtpServer
from tests.pushservice import LocalPushService
from tests.safety.conftest import mail_recipients, pushes_by_person, safety_person, subscribe

pytestmark = pytest.mark.django_db


@dataclass
class World:
    org: Organization
    admin: User
    ok: User  # push and e-mail work; confirms from the notification's button
    failing: User  # push endpoint answers 500; e-mail works
    bounced: User  # no push; a work address a bounce report marked failing
    nothing: User  # no push, no e-mail
    page: User  # e-mail only; confirms on the page the e-mail links to
    private: User  # push, and only a confirmed private address


@pytest.fixture
def world(org: Organization, push_service: LocalPushService) -> World:
    admin = factories.person(org, "anpi-admin", roles=(Role.ADMIN_ANPI,))
    ok = safety_person(org, "ok", email="ok@acme.example")
    failing = safety_person(org, "failing", email="failing@acme.example", language="en")
    bounced = safety_person(org, "bounced", email="Bounce@acme.example")
    nothing = safety_person(org, "nothing", email="")
    page = safety_person(org, "page", email="page@acme.example")
    private = safety_person(org, "private", email="")
    safety_person(org, "guest", anpi=False)  # no safety-confirmation ID: never checked
    gone = safety_person(org, "gone")
    gone.is_active = False
    gone.save(update_fields=["is_active"])
    subscribe(push_service, ok)
    subscribe(push_service, failing, respond=500)
    subscribe(push_service, private)
    MailAddressState.objects.create(address="bounce@acme.example", failing=True, bounce_count=1)
    PrivateContact.objects.create(user=private, address="me@private.example", confirmed_at=timezone.now())
    PrivateContact.objects.create(user=nothing, address="unconfirmed@private.example")  # never used
    return World(org, admin, ok, failing, bounced, nothing, page, private)


def token(check: ContactCheck, person: User) -> str:
    return checks.check_token(organization_id=check.organization_id, check_id=check.id, person_id=person.id)


def confirm_api(check: ContactCheck, person: User, body: dict[str, Any] | None = None, *, slug: str = "acme") -> Any:
    path = checks.check_api_path(slug=slug, token=token(check, person), action="confirm")
    return Client().post(path, json.dumps(body or {"via": "push"}), content_type="application/json")


def receipt(check: ContactCheck, person: User, body: Any, *, slug: str = "acme") -> Any:
    path = checks.check_api_path(slug=slug, token=token(check, person), action="receipt")
    return Client().post(path, json.dumps(body), content_type="application/json")


def states(check: ContactCheck) -> dict[tuple[str, str], str]:
    return {
        (d.person.login_id, d.channel): d.state
        for d in ContactCheckDelivery.objects.filter(check_run=check).select_related("person")
    }


def run(check: ContactCheck) -> int:
    return checks.contact_check_run(check_id=check.id)


def test_a_check_reaches_everyone_on_every_channel_and_finds_each_problem(
    world: World, push_service: LocalPushService, smtp_server: SmtpServer, settings: Any
) -> None:
    w = world
    check = checks.check_start(organization=w.org, actor=w.admin)
    people = set(ContactCheckPerson.objects.filter(check_run=check).values_list("person__login_id", flat=True))
    assert people == {"ok", "failing", "bounced", "nothing", "page", "private"}
    assert check.people == 6 and check.finished_at is None
    assert states(check) == {
        ("ok", "push"): "queued",
        ("ok", "email"): "queued",
        ("failing", "push"): "queued",
        ("failing", "email"): "queued",
        ("bounced", "email"): "queued",
        ("page", "email"): "queued",
        ("private", "push"): "queued",
        ("private", "email"): "queued",
    }

    assert run(check) == 8
    check.refresh_from_db()
    assert check.finished_at is not None
    assert states(check) == {
        ("ok", "push"): "sent",
        ("ok", "email"): "sent",
        ("failing", "push"): "failed",
        ("failing", "email"): "sent",
        ("bounced", "email"): "sent",  # the SMTP server took it; the bounce report is what says it fails
        ("page", "email"): "sent",
        ("private", "push"): "sent",
        ("private", "email"): "sent",
    }

    # The push: kind "check", the person's own link and the one confirm button, decrypted by the push service.
    pushes = pushes_by_person(push_service)
    assert set(pushes) == {w.ok.id, w.failing.id, w.private.id}
    payload = pushes[w.ok.id][0]
    ok_token = token(check, w.ok)
    assert payload["kind"] == "check" and payload["tag"] == f"check-{check.id}"
    assert payload["url"] == f"/acme/check/{ok_token}/?via=push"
    assert payload["receipt"] == f"/acme/api/safety/checks/link/{ok_token}/receipt/"
    assert [a["action"] for a in payload["actions"]] == ["confirm"]
    assert payload["actions"][0]["post"] == f"/acme/api/safety/checks/link/{ok_token}/confirm/"
    assert payload["actions"][0]["body"] == {"via": "push", "quick": True}
    assert payload["actions"][0]["title"] == checks_text("ja", "I got this")
    assert pushes[w.failing.id][0]["actions"][0]["title"] == "I got this"  # in English, the person's language

    # The mail: one per person with an address, the private one included, each with the person's link.
    assert mail_recipients(smtp_server.messages) == sorted(
        [
            "ok@acme.example",
            "failing@acme.example",
            "Bounce@acme.example",
            "page@acme.example",
            "me@private.example",
        ]
    )
    by_to = {m.envelope_to[0]: m for m in smtp_server.messages}
    body = by_to["page@acme.example"].get_body(("plain",)).get_content()
    assert f"{settings.SITE_URL}/acme/check/{token(check, w.page)}/?via=mail" in body
    assert checks_text("ja", "Contact check: %(organization)s", organization="ACME株式会社") == str(
        by_to["page@acme.example"]["Subject"]
    )
    assert "Nothing has happened" in by_to["failing@acme.example"].get_body(("plain",)).get_content()

    # ok confirms from the notification's button (the service worker adds client_key; twice is once).
    key = str(uuid.uuid4())
    first = confirm_api(check, w.ok, {"via": "push", "quick": True, "client_key": key})
    assert first.status_code == 200, first.content
    again = confirm_api(check, w.ok, {"via": "push", "quick": True, "client_key": key})
    assert again.status_code == 200 and again.json()["confirmed_at"] == first.json()["confirmed_at"]
    # page opens the e-mail's link (GET shows the button and confirms nothing), then presses it.
    client = Client()
    url = checks.check_path(slug="acme", token=token(check, w.page)) + "?via=mail"
    shown = client.get(url)
    assert shown.status_code == 200 and b'id="confirm-button"' in shown.content
    assert ContactCheckPerson.objects.get(check_run=check, person=w.page).confirmed_at is None
    assert states(check)[("page", "email")] == "opened"
    assert client.post(url).status_code == 302
    assert b'id="confirm-button"' not in client.get(url).content

    confirmed = dict(
        ContactCheckPerson.objects.filter(check_run=check, confirmed_at__isnull=False).values_list(
            "person__login_id", "confirmed_via"
        )
    )
    assert confirmed == {"ok": "push", "page": "email"}
    assert states(check)[("ok", "push")] == "answered" and states(check)[("ok", "email")] == "sent"
    assert states(check)[("page", "email")] == "answered"

    assert checks.contact_problems(organization=w.org) == {
        w.failing.id: ["push_failing", "not_confirmed"],
        w.bounced.id: ["no_push", "email_bounced", "not_confirmed"],
        w.nothing.id: ["no_contact"],
        w.page.id: ["no_push"],
        w.private.id: ["not_confirmed"],
    }
    # The detail API: counts per problem, and the people with a problem (all of them, no addresses).
    detail = signed(w.admin).get(f"/acme/api/safety/checks/{check.id}/")
    assert detail.status_code == 200, detail.content
    data = detail.json()
    assert data["counts"] == {
        "no_contact": 1,
        "no_push": 2,
        "push_failing": 1,
        "email_bounced": 1,
        "not_confirmed": 3,
        "ok": 1,
        "confirmed": 2,
        "total": 6,
    }
    assert data["matched"] == 5 and {p["id"] for p in data["people"]} == {
        w.failing.id,
        w.bounced.id,
        w.nothing.id,
        w.page.id,
        w.private.id,
    }
    assert "private.example" not in detail.content.decode() and "acme.example" not in detail.content.decode()
    only = signed(w.admin).get(f"/acme/api/safety/checks/{check.id}/?problem=email_bounced").json()
    assert [p["id"] for p in only["people"]] == [w.bounced.id] and only["matched"] == 1
    assert [
        p["id"] for p in signed(w.admin).get(f"/acme/api/safety/checks/{check.id}/?problem=ok").json()["people"]
    ] == [w.ok.id]


def checks_text(language: str, message: str, **values: Any) -> str:
    from django.utils import translation

    with translation.override(language):
        text = translation.gettext(message)
    return text % values if values else text


def signed(user: User) -> Client:
    from tests.conftest import signed_in

    return signed_in(user)


def test_sending_again_reaches_only_the_people_with_problems_on_their_channels(
    world: World, push_service: LocalPushService, smtp_server: SmtpServer
) -> None:
    w = world
    check = checks.check_start(organization=w.org, actor=w.admin)
    run(check)
    assert confirm_api(check, w.ok).status_code == 200
    confirm_api(check, w.private, {"via": "mail"})
    push_service.received.clear()
    smtp_server.messages.clear()

    # Default: every problem but no_contact. failing (push + e-mail), bounced (e-mail), page (e-mail: no_push).
    response = signed(w.admin).post(f"/acme/api/safety/checks/{check.id}/resend/", {}, content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["people"] == 3
    assert response.json()["check"]["round"] == 2 and response.json()["check"]["running"] is True
    run(check)
    assert set(pushes_by_person(push_service)) == {w.failing.id}
    assert mail_recipients(smtp_server.messages) == sorted(
        ["failing@acme.example", "Bounce@acme.example", "page@acme.example"]
    )
    rounds = {
        (d.person.login_id, d.channel): d.round
        for d in ContactCheckDelivery.objects.filter(check_run=check).select_related("person")
    }
    assert rounds == {
        ("ok", "push"): 1,
        ("ok", "email"): 1,
        ("failing", "push"): 2,
        ("failing", "email"): 2,
        ("bounced", "email"): 2,
        ("page", "email"): 2,
        ("private", "push"): 1,
        ("private", "email"): 1,
    }
    # Confirmations stay; the second round's states are its own.
    assert ContactCheckPerson.objects.filter(check_run=check, confirmed_at__isnull=False).count() == 2

    # One problem: only the person who has it, on their channels.
    smtp_server.messages.clear()
    push_service.received.clear()
    response = signed(w.admin).post(
        f"/acme/api/safety/checks/{check.id}/resend/", {"problems": ["email_bounced"]}, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["people"] == 1
    run(check)
    assert mail_recipients(smtp_server.messages) == ["Bounce@acme.example"] and push_service.received == []

    # Nobody to reach (no_contact has no channel): 400, and nothing changes.
    before = states(check)
    response = signed(w.admin).post(
        f"/acme/api/safety/checks/{check.id}/resend/", {"problems": ["no_contact"]}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "nobody"
    assert states(check) == before and ContactCheck.objects.get(id=check.id).round == 3


def test_a_device_subscribed_since_gets_a_row_of_its_own_when_sent_again(
    world: World, push_service: LocalPushService, smtp_server: SmtpServer
) -> None:
    w = world
    check = checks.check_start(organization=w.org, actor=w.admin)
    run(check)
    subscribe(push_service, w.page)  # page adds a phone after the check
    push_service.received.clear()
    checks.check_resend(check=check, actor=w.admin, problems=["not_confirmed"])
    run(check)
    assert set(pushes_by_person(push_service)) == {w.failing.id, w.page.id, w.private.id, w.ok.id}
    assert ContactCheckDelivery.objects.get(check_run=check, person=w.page, channel="push").round == 2


def test_only_the_latest_check_is_sent_again_and_a_second_check_waits_for_the_first(
    world: World, push_service: LocalPushService, smtp_server: SmtpServer
) -> None:
    w = world
    first = checks.check_start(organization=w.org, actor=w.admin)
    client = signed(w.admin)
    response = client.post("/acme/api/safety/checks/", {}, content_type="application/json")
    assert response.status_code == 409 and response.json()["code"] == "check_running"
    assert ContactCheck.objects.count() == 1
    run(first)
    response = client.post("/acme/api/safety/checks/", {}, content_type="application/json")
    assert response.status_code == 201, response.content
    second = ContactCheck.objects.get(id=response.json()["id"])
    run(second)
    response = client.post(f"/acme/api/safety/checks/{first.id}/resend/", {}, content_type="application/json")
    assert response.status_code == 409 and response.json()["code"] == "not_latest"
    listed = client.get("/acme/api/safety/checks/").json()
    assert [c["id"] for c in listed] == [second.id, first.id]
    assert listed[0]["people"] == 6 and listed[0]["confirmed"] == 0


def test_problems_follow_subscriptions_and_bounces_without_a_check(world: World) -> None:
    w = world
    # No check yet: no not_confirmed; the failing endpoint has not been sent anything, so it has not failed.
    assert checks.contact_problems(organization=w.org) == {
        w.bounced.id: ["no_push", "email_bounced"],
        w.nothing.id: ["no_contact"],
        w.page.id: ["no_push"],
    }
    # A subscription that failed last (no success since) is failing; one success since clears it.
    subscription = PushSubscription.objects.get(user=w.ok)
    subscription.failure_count, subscription.last_failure_at = 2, timezone.now()
    subscription.save()
    assert checks.contact_problems(organization=w.org, person_ids=[w.ok.id]) == {w.ok.id: ["push_failing"]}
    subscription.last_success_at = timezone.now() + timedelta(seconds=1)
    subscription.save()
    assert checks.contact_problems(organization=w.org, person_ids=[w.ok.id]) == {}
    # The recovered address clears email_bounced.
    MailAddressState.objects.filter(address="bounce@acme.example").update(failing=False)
    assert checks.contact_problems(organization=w.org, person_ids=[w.bounced.id]) == {w.bounced.id: ["no_push"]}


def test_a_run_a_dead_worker_left_is_resumed_by_the_scan_and_sends_nothing_twice(
    world: World, push_service: LocalPushService, smtp_server: SmtpServer
) -> None:
    w = world
    check = checks.check_start(organization=w.org, actor=w.admin)
    # A worker claimed the push rows and died.
    ContactCheckDelivery.objects.filter(check_run=check, channel="push").update(
        claimed_at=timezone.now() - timedelta(minutes=5)
    )
    ContactCheck.objects.filter(id=check.id).update(
        heartbeat_at=timezone.now() - timedelta(minutes=5), created_at=timezone.now() - timedelta(minutes=5)
    )
    assert check_tasks.contact_check_scan() == {"started": 0, "resumed": 1}  # eager Celery: runs it here
    check.refresh_from_db()
    assert check.finished_at is not None
    assert len(push_service.received) == 3 and len(smtp_server.messages) == 5
    assert check_tasks.contact_check_scan() == {"started": 0, "resumed": 0}
    assert run(check) == 0 and len(push_service.received) == 3


def test_a_mail_server_down_leaves_the_rows_queued_for_the_scan(world: World, settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens
    w = world
    check = checks.check_start(organization=w.org, actor=w.admin)
    run(check)
    check.refresh_from_db()
    assert check.finished_at is None
    assert {s for (_p, c), s in states(check).items() if c == "email"} == {"queued"}


# --- The schedule ---------------------------------------------------------------------------------------------


def test_a_scheduled_check_starts_once_when_due_and_not_before(world: World) -> None:
    w = world
    t0 = timezone.now()
    checks.check_schedule_set(organization=w.org, every_days=7, now=t0)
    assert checks.check_schedule_get(organization=w.org) == (7, t0 + timedelta(days=7))

    assert check_tasks.contact_check_scan(now=t0 + timedelta(days=6, hours=23))["started"] == 0
    assert not ContactCheck.objects.exists()
    due = t0 + timedelta(days=7, minutes=1)
    assert check_tasks.contact_check_scan(now=due)["started"] == 1
    assert check_tasks.contact_check_scan(now=due)["started"] == 0
    check = ContactCheck.objects.get()
    assert check.scheduled and check.created_by is None and check.people == 6
    assert checks.check_schedule_get(organization=w.org) == (7, t0 + timedelta(days=14))

    # (The scan also ran it: with the clock a week on, the check's run looked stalled.)
    check.refresh_from_db()
    assert check.finished_at is not None

    # Beat down for five weeks: one check when it is back, not a backlog of five; the next due time is ahead.
    later = t0 + timedelta(days=50)
    assert check_tasks.contact_check_scan(now=later)["started"] == 1
    assert ContactCheck.objects.count() == 2
    assert checks.check_schedule_get(organization=w.org)[1] == t0 + timedelta(days=56)

    # Due while a check is still being sent: skipped until the next period.
    ContactCheck.objects.update(finished_at=None)
    assert checks.check_scheduled_start(organization_id=w.org.id, now=t0 + timedelta(days=57)) is None
    assert ContactCheck.objects.count() == 2
    assert checks.check_schedule_get(organization=w.org)[1] == t0 + timedelta(days=63)

    # Off: nothing more.
    checks.check_schedule_set(organization=w.org, every_days=0, now=later)
    assert checks.check_schedule_get(organization=w.org) == (0, None)
    assert check_tasks.contact_check_scan(now=later + timedelta(days=400))["started"] == 0


@pytest.mark.django_db(transaction=True)
def test_scans_at_once_start_the_scheduled_check_once() -> None:
    org = factories.organization(slug="acme")
    for n in range(3):
        safety_person(org, f"p{n}")
    t0 = timezone.now()
    checks.check_schedule_set(organization=org, every_days=1, now=t0)
    due = t0 + timedelta(days=1, seconds=1)
    barrier = threading.Barrier(4)
    started: list[int] = []
    errors: list[BaseException] = []

    def scan() -> None:
        try:
            barrier.wait()
            found = checks.check_scheduled_start(organization_id=org.id, now=due)
            if found is not None:
                started.append(found.id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(started) == 1 and ContactCheck.objects.count() == 1
    assert SafetySettings.objects.get(organization=org).check_next_at == t0 + timedelta(days=2)


@pytest.mark.parametrize("value", [-1, 366, "7", 1.5, True, None])
def test_a_bad_schedule_is_refused_and_changes_nothing(world: World, value: Any) -> None:
    client = signed(world.admin)
    client.put("/acme/api/safety/checks/schedule/", {"every_days": 3}, content_type="application/json")
    response = client.put("/acme/api/safety/checks/schedule/", {"every_days": value}, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "bad_every_days"
    assert client.get("/acme/api/safety/checks/schedule/").json()["every_days"] == 3


def test_schedule_api(world: World) -> None:
    client = signed(world.admin)
    assert client.get("/acme/api/safety/checks/schedule/").json() == {"every_days": 0, "next_at": None}
    assert not SafetySettings.objects.exists()  # reading never creates the settings row
    saved = client.put("/acme/api/safety/checks/schedule/", {"every_days": 30}, content_type="application/json")
    assert saved.status_code == 200 and saved.json()["every_days"] == 30 and saved.json()["next_at"]
    for body in ("[]", '"x"', "{}"):
        response = client.put("/acme/api/safety/checks/schedule/", body, content_type="application/json")
        assert response.status_code == 400, body


@pytest.mark.django_db
def test_a_late_receipt_of_the_first_round_does_not_cancel_a_resend(
    org: Organization, push_service: LocalPushService
) -> None:
    admin = factories.person(org, "anpi", roles=(Role.ADMIN_ANPI,))
    person = safety_person(org, "late", email="")
    subscribe(push_service, person)
    check = checks.check_start(organization=org, actor=admin)
    checks.contact_check_run(check_id=check.id)
    assert checks.check_resend(check=check, actor=admin, problems=["not_confirmed"]) == 1
    token = checks.check_token(organization_id=org.id, check_id=check.id, person_id=person.id)
    response = Client().post(
        checks.check_api_path(slug="acme", token=token, action="receipt"),
        json.dumps({"event": "delivered"}),
        content_type="application/json",
    )
    assert response.status_code == 200
    assert checks.contact_check_run(check_id=check.id) == 1  # the second round went out
    row = ContactCheckDelivery.objects.get(check_run=check, person=person)
    assert (row.state, row.round) == ("sent", 2)


@pytest.mark.django_db
def test_a_resend_leaves_a_channel_already_confirmed_on(org: Organization, smtp_server: SmtpServer) -> None:
    admin = factories.person(org, "anpi", roles=(Role.ADMIN_ANPI,))
    person = safety_person(org, "mailonly", email="mailonly@example.com")
    check = checks.check_start(organization=org, actor=admin)
    checks.contact_check_run(check_id=check.id)
    token = checks.check_token(organization_id=org.id, check_id=check.id, person_id=person.id)
    checks.check_confirm(token, "mail", slug="acme")
    sent = mail_recipients(smtp_server.messages).count("mailonly@example.com")
    checks.check_resend(check=check, actor=admin, problems=None)  # they have no push: a problem
    checks.contact_check_run(check_id=check.id)
    assert ContactCheckDelivery.objects.get(check_run=check, person=person, channel="email").state == "answered"
    assert mail_recipients(smtp_server.messages).count("mailonly@example.com") == sent
