"""Escalation (再送) with a controllable clock, and the people nobody could reach on the live board.

A person still unanswered `escalate_after_minutes` after they were last sent an incident is sent it again, once,
on every channel they have (a new send, each delivery row in its next round); at N-1 minutes nothing happens, 0
switches it off, completed incidents are left alone, and two scans at once send once. Someone whose every push
and e-mail failed (the push service answered 410, so the subscription is gone; the mail bounced, reported by a
real DSN to the bounce endpoint) is listed on the board of their department's subtree, with their phone numbers
as links in the organisation's phone scheme and the reasons as codes, never an address; another department's
manager does not see them.

Real parts: PostgreSQL, the local push service (tests/pushservice.py), aiosmtpd (`smtp_server`). The clock is
the `now` argument of `escalations_due` / `escalate`: nothing sleeps."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from consumers.models import PushSubscription, Stream
from directory.models import Organization, Role, User
from safety import escalation, services
from safety.board import board_follow, board_snapshot, board_tick
from safety.escalation import escalate, escalations_due, unreachable_reasons
from safety.events import board_group
from safety.models import Delivery, DeliveryState, Dispatch, Incident, IncidentStatus, Recipient, SafetySettings
from safety.tasks import safety_scan
from tests import factories
from tests.conftest import signed_in
from tests.pushservice import LocalPushService
from tests.safety.conftest import (
    Tree,
    answer,
    incident_make,
    mail_recipients,
    pushes_by_person,
    safety_person,
    send,
    subscribe,
)

pytestmark = pytest.mark.django_db

MINUTE = timedelta(minutes=1)


def first_sent(incident: Incident) -> Any:
    return Dispatch.objects.get(incident=incident, number=1).created_at


def rounds(incident: Incident, person: User) -> dict[str, int]:
    return dict(Delivery.objects.filter(incident=incident, person=person).values_list("channel", "round"))


# --- the decision, table-driven ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ({}, ["no_contact"]),
        ({"push": ("failed", "410 Gone")}, ["push_gone", "no_email"]),
        ({"push": ("failed", "404 ")}, ["push_gone", "no_email"]),
        ({"push": ("failed", "500 boom")}, ["push_failed", "no_email"]),
        ({"push": ("failed", "no push subscription")}, ["no_push", "no_email"]),
        ({"email": ("failed", "bounced: 5.1.1 550 <a@b.example>")}, ["no_push", "email_bounced"]),
        ({"email": ("failed", "no e-mail address")}, ["no_push", "no_email"]),
        ({"email": ("failed", "refused")}, ["no_push", "email_failed"]),
        ({"push": ("failed", "410"), "email": ("failed", "bounced: 5.1.1")}, ["push_gone", "email_bounced"]),
        ({"push": ("failed", "410"), "email": ("sent", "")}, None),
        ({"push": ("queued", ""), "email": ("failed", "refused")}, None),
        ({"push": ("delivered", "")}, None),
        ({"email": ("opened", "")}, None),
        # in-app never counts: it reaches only people who open the app
        ({"inapp": ("sent", "")}, ["no_contact"]),
    ],
)
def test_who_could_not_be_reached_and_why(rows: dict[str, tuple[str, str]], expected: list[str] | None) -> None:
    assert unreachable_reasons(rows) == expected


# --- escalation ---------------------------------------------------------------------------------------------------


def test_escalation_fires_at_exactly_n_minutes_on_every_channel_once_for_the_unanswered(
    org: Organization, crisis: User, incident: Incident, push_service: LocalPushService, smtp_server: Any
) -> None:
    quiet, late, done = (safety_person(org, n) for n in ("quiet", "late", "done"))
    for person in (quiet, late, done):
        subscribe(push_service, person)
    send(incident, crisis)
    answer(incident, done)
    assert len(push_service.received) == 3 and len(smtp_server.messages) == 3
    t0 = first_sent(incident)

    # The default (no settings row) is 30 minutes: at 29 nothing is due, and escalating does nothing.
    assert not SafetySettings.objects.exists()
    assert escalations_due(now=t0 + 29 * MINUTE) == []
    assert escalations_due(now=t0 + 30 * MINUTE - timedelta(microseconds=1)) == []
    assert escalate(incident_id=incident.id, now=t0 + 29 * MINUTE) == 0
    assert Dispatch.objects.filter(incident=incident).count() == 1

    # Late answers at minute 29: only the quiet one is sent again, at exactly 30 minutes.
    answer(incident, late, "minor")
    assert escalations_due(now=t0 + 30 * MINUTE) == [incident.id]
    assert escalate(incident_id=incident.id, now=t0 + 30 * MINUTE) == 1
    second = Dispatch.objects.get(incident=incident, number=2)
    services.dispatch_run(dispatch_id=second.id)  # as the task queued on commit would
    assert second.created_by is None and second.target == {
        "mode": "chosen",
        "person_ids": [quiet.id],
        "escalation": True,
    }
    assert Recipient.objects.get(incident=incident, person=quiet).escalated_at == t0 + 30 * MINUTE
    assert Recipient.objects.filter(incident=incident, escalated_at__isnull=False).count() == 1
    # On every channel: the rows moved to the new send, each in its next round, and were sent.
    assert rounds(incident, quiet) == {"push": 2, "email": 2, "inapp": 2}
    assert rounds(incident, late) == rounds(incident, done) == {"push": 1, "email": 1, "inapp": 1}
    assert {d.state for d in Delivery.objects.filter(incident=incident, person=quiet)} == {DeliveryState.SENT}
    assert len(pushes_by_person(push_service)[quiet.id]) == 2
    assert len(pushes_by_person(push_service)[late.id]) == 1
    assert mail_recipients(smtp_server.messages).count(quiet.email) == 2
    assert len(smtp_server.messages) == 4

    # Once per person per incident: still unanswered an hour later, not sent a third time.
    assert escalations_due(now=t0 + 90 * MINUTE) == []
    assert escalate(incident_id=incident.id, now=t0 + 90 * MINUTE) == 0
    assert len(push_service.received) == 4 and Dispatch.objects.filter(incident=incident).count() == 2


def test_the_delay_counts_from_the_last_send_to_that_person(
    org: Organization, crisis: User, incident: Incident
) -> None:
    SafetySettings.objects.create(organization=org, escalate_after_minutes=10)
    early, resent = safety_person(org, "early", email=""), safety_person(org, "resent", email="")
    send(incident, crisis)
    t0 = first_sent(incident)
    # A manual resend to one of them five minutes later (its time is moved there: the clock is ours).
    again = send(incident, crisis, {"mode": "chosen", "person_ids": [resent.id]})
    Dispatch.objects.filter(id=again.id).update(created_at=t0 + 5 * MINUTE)
    assert escalate(incident_id=incident.id, now=t0 + 10 * MINUTE) == 1
    assert Recipient.objects.get(incident=incident, person=early).escalated_at is not None
    assert Recipient.objects.get(incident=incident, person=resent).escalated_at is None
    assert escalations_due(now=t0 + 15 * MINUTE - timedelta(seconds=1)) == []
    assert escalate(incident_id=incident.id, now=t0 + 15 * MINUTE) == 1
    assert Recipient.objects.get(incident=incident, person=resent).escalated_at == t0 + 15 * MINUTE


def test_off_when_zero_and_completed_incidents_are_left_alone(org: Organization, crisis: User) -> None:
    other_org = factories.organization(slug="globex")
    other_crisis = factories.person(other_org, "boss", roles=(Role.CRISIS_MANAGER,))
    SafetySettings.objects.create(organization=org, escalate_after_minutes=0)
    off = incident_make(org, crisis)
    safety_person(org, "a", email="")
    send(off, crisis)
    done = incident_make(other_org, other_crisis)
    safety_person(other_org, "b", email="")
    send(done, other_crisis)
    services.incident_complete(incident=done, actor=other_crisis)
    draft = incident_make(other_org, other_crisis)
    later = first_sent(off) + timedelta(days=2)
    assert escalations_due(now=later) == []
    assert escalate(incident_id=off.id, now=later) == 0
    assert escalate(incident_id=done.id, now=later) == 0
    assert escalate(incident_id=draft.id, now=later) == 0
    assert escalate(incident_id=10**12, now=later) == 0
    assert Dispatch.objects.count() == 2 and not Recipient.objects.filter(escalated_at__isnull=False).exists()
    # Switched on again: the open incident escalates, the completed one still does not.
    SafetySettings.objects.filter(organization=org).update(escalate_after_minutes=60)
    assert escalations_due(now=later) == [off.id]


def test_people_who_can_no_longer_be_sent_to_are_skipped(org: Organization, crisis: User, incident: Incident) -> None:
    gone, stays = safety_person(org, "gone", email=""), safety_person(org, "stays", email="")
    send(incident, crisis)
    User.objects.filter(id=gone.id).update(is_active=False)
    assert escalate(incident_id=incident.id, now=first_sent(incident) + 31 * MINUTE) == 1
    assert Dispatch.objects.get(incident=incident, number=2).target["person_ids"] == [stays.id]
    assert Recipient.objects.get(incident=incident, person=gone).escalated_at is None


def test_the_scan_escalates(org: Organization, crisis: User, incident: Incident) -> None:
    people = [safety_person(org, f"s{n}", email="") for n in range(3)]
    send(incident, crisis)
    answer(incident, people[0])
    assert safety_scan()["escalated"] == 0
    past = first_sent(incident) - 31 * MINUTE
    Dispatch.objects.filter(incident=incident).update(created_at=past)
    Recipient.objects.filter(incident=incident).update(created_at=past)
    assert safety_scan()["escalated"] == 2
    assert safety_scan()["escalated"] == 0
    incident.refresh_from_db()
    assert incident.status in (IncidentStatus.SENDING, IncidentStatus.ACCEPTING)


@pytest.mark.django_db(transaction=True)
def test_two_scans_at_once_send_once(monkeypatch: pytest.MonkeyPatch) -> None:
    org = factories.organization(slug="acme")
    crisis = factories.person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    incident = incident_make(org, crisis)
    people = [safety_person(org, f"c{n}", email="") for n in range(4)]
    send(incident, crisis)
    now = first_sent(incident) + 45 * MINUTE
    real_create = services.dispatch_create

    def slow_create(**kwargs: Any) -> Dispatch:
        # Hold the transaction open a while: without the incident's row lock, the other scan would read the same
        # people as due meanwhile and send them a second time.
        dispatch = real_create(**kwargs)
        time.sleep(0.5)
        return dispatch

    monkeypatch.setattr(services, "dispatch_create", slow_create)
    start = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def scan() -> None:
        try:
            start.wait()
            results.append(escalate(incident_id=incident.id, now=now))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=scan) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted(results) == [0, len(people)]
    assert Dispatch.objects.filter(incident=incident).count() == 2
    assert set(Delivery.objects.filter(incident=incident).values_list("round", flat=True)) == {2}


# --- the setting --------------------------------------------------------------------------------------------------


def test_the_setting_is_read_and_changed_through_the_settings_api(org: Organization, crisis_client: Client) -> None:
    url = "/acme/api/safety/auto/settings/"
    assert crisis_client.get(url).json() == {"drill_mode": False, "escalate_after_minutes": 30}
    assert not SafetySettings.objects.exists()  # reading never creates the row
    saved = crisis_client.patch(url, {"escalate_after_minutes": 15}, content_type="application/json")
    assert saved.status_code == 200 and saved.json() == {"drill_mode": False, "escalate_after_minutes": 15}
    assert escalation.escalate_minutes_get(organization_id=org.id) == 15
    for value in (-1, 1441, "15", 1.5, True, None, [15], {"n": 1}):
        response = crisis_client.patch(url, {"escalate_after_minutes": value}, content_type="application/json")
        assert response.status_code == 400 and response.json()["code"] == "bad_escalation", value
    # Both at once; a bad one of the two changes neither.
    both = crisis_client.put(url, {"drill_mode": True, "escalate_after_minutes": 0}, content_type="application/json")
    assert both.json() == {"drill_mode": True, "escalate_after_minutes": 0}
    bad = crisis_client.put(url, {"drill_mode": False, "escalate_after_minutes": -5}, content_type="application/json")
    assert bad.status_code == 400
    bad = crisis_client.put(url, {"drill_mode": "no", "escalate_after_minutes": 5}, content_type="application/json")
    assert bad.status_code == 400
    row = SafetySettings.objects.get(organization=org)
    assert (row.drill_mode, row.escalate_after_minutes) == (True, 0)
    # Only crisis managers and safety administrators.
    manager = factories.person(org, "manager", roles=(Role.MANAGER,))
    refused = signed_in(manager).patch(url, {"escalate_after_minutes": 5}, content_type="application/json")
    assert refused.status_code == 403
    assert SafetySettings.objects.get(organization=org).escalate_after_minutes == 0


# --- people nobody could reach, on the board ------------------------------------------------------------------------

TOKEN = "bounce-secret-token"


def bounce(address: str) -> None:
    """A real DSN for `address`, posted to the bounce endpoint as the mail server's pipe would."""
    report = (
        "From: MAILER-DAEMON@mail.acme.example\nSubject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nThe mail system\n\n"
        "--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mail.acme.example\n\n"
        f"Final-Recipient: rfc822; {address}\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{address}>: Recipient address rejected: User unknown\n\n--B--\n"
    )
    response = Client().post(
        "/api/mail/bounces/", data=report.encode(), content_type="message/rfc822", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
    )
    assert response.status_code == 200, response.content


def named(user: User, last: str, first: str, *, phone: str = "", mobile: str = "") -> User:
    user.last_name, user.first_name = last, first
    user.phone_number, user.mobile_phone_number = phone, mobile
    user.save(update_fields=["last_name", "first_name", "phone_number", "mobile_phone_number"])
    return user


def frame_data(frames: list[Any], stream: str) -> dict[str, Any]:
    [frame] = [f for f in frames if f.stream == stream]
    return dict(json.loads(frame.text)["data"])


def test_unreachable_people_show_on_the_board_of_their_subtree_only(
    org: Organization, crisis: User, tree: Tree, push_service: LocalPushService, smtp_server: Any, settings: Any
) -> None:
    settings.MAIL_BOUNCE_TOKEN = TOKEN
    Organization.objects.filter(id=org.id).update(phone_url_scheme="com050voipbiz://keypad?tel=")
    sales_manager = factories.person(org, "sm", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales)
    plant_manager = factories.person(org, "pm", roles=(Role.DEPARTMENT_MANAGER,), department=tree.plant)
    # push only, and the push service says the subscription is gone (410)
    gone = named(
        safety_person(org, "gone", department=tree.east, email=""),
        "青木",
        "怜奈",
        phone="03-1234-5678",
        mobile="090 1111 2222",
    )
    subscribe(push_service, gone, respond=410)
    # e-mail only, and it bounces
    bounced = named(safety_person(org, "bounced", department=tree.sales, email="Gone.User@example.com"), "石川", "悠真")
    # neither channel, in the plant
    nobody = named(safety_person(org, "nobody", department=tree.plant, email=""), "田中", "翔", mobile="080-3333-4444")
    # reachable, or unreachable but answered: never listed
    fine = safety_person(org, "fine", department=tree.east)
    subscribe(push_service, fine)
    answered = safety_person(org, "answered", department=tree.east, email="")
    subscribe(push_service, answered, respond=410)
    incident = incident_make(org, crisis)
    send(incident, crisis)
    answer(incident, answered)
    incident.refresh_from_db()
    assert not PushSubscription.objects.filter(user=gone).exists()  # removed on the 410
    assert Delivery.objects.get(incident=incident, person=gone, channel="push").state == DeliveryState.FAILED
    assert Delivery.objects.get(incident=incident, person=bounced, channel="email").state == DeliveryState.SENT

    whole, sales, plant = (
        board_group(incident.id),
        board_group(incident.id, tree.sales.id),
        board_group(incident.id, tree.plant.id),
    )
    for key in (whole, sales, plant):
        Stream.objects.create(key=key)
    board_follow([sales, plant], 5)
    sent: dict[str, str] = {}
    frames = board_tick(str(incident.id), sent)
    assert [u["id"] for u in frame_data(frames, sales)["unreachable"]] == [gone.id]  # the mail was accepted
    sent.update({f.stream: f.digest for f in frames})

    bounce("Gone.User@example.com")
    frames = board_tick(str(incident.id), sent)
    # The bounce changed the sales board and the whole one; the plant's numbers did not change: no frame.
    assert {f.stream for f in frames} == {whole, sales}
    on_sales = frame_data(frames, sales)
    assert [u["id"] for u in on_sales["unreachable"]] == [bounced.id, gone.id]  # directory order: 営業部, then 東日本
    assert on_sales["unreachable_total"] == 2
    by_id = {u["id"]: u for u in on_sales["unreachable"]}
    assert by_id[gone.id]["reasons"] == ["push_gone", "no_email"]
    assert by_id[bounced.id]["reasons"] == ["no_push", "email_bounced"]
    assert by_id[gone.id]["name"] == "青木 怜奈" and by_id[gone.id]["department"] == tree.east.name
    assert by_id[gone.id]["phones"] == [
        {"kind": "phone", "number": "03-1234-5678", "href": "com050voipbiz://keypad?tel=0312345678"},
        {"kind": "mobile", "number": "090 1111 2222", "href": "com050voipbiz://keypad?tel=09011112222"},
    ]
    assert by_id[bounced.id]["phones"] == []
    whole_board = frame_data(frames, whole)
    assert {u["id"] for u in whole_board["unreachable"]} == {gone.id, bounced.id, nobody.id}
    assert whole_board["unreachable_total"] == 3
    for frame in frames:
        assert "@" not in frame.text  # no address, not even the bounce's diagnostic
    assert fine.id not in by_id and answered.id not in by_id

    # Each department manager's own board (the socket's snapshot and the REST board): their subtree only.
    on_plant = board_snapshot(incident, tree.plant.id)["unreachable"]
    assert [(u["id"], u["reasons"]) for u in on_plant] == [(nobody.id, ["no_contact"])]
    sales_api = signed_in(sales_manager).get(f"/acme/api/safety/incidents/{incident.id}/board/").json()
    assert sales_api["stream"] == sales
    assert {u["id"] for u in sales_api["board"]["unreachable"]} == {gone.id, bounced.id}
    plant_api = signed_in(plant_manager).get(f"/acme/api/safety/incidents/{incident.id}/board/").json()
    assert [u["id"] for u in plant_api["board"]["unreachable"]] == [nobody.id]
    assert (
        signed_in(plant_manager)
        .get(f"/acme/api/safety/incidents/{incident.id}/board/?department={tree.sales.id}")
        .status_code
        == 404
    )

    # Answering takes a person off the list; a completed incident lists nobody.
    answer(incident, gone)
    assert [u["id"] for u in board_snapshot(incident, tree.sales.id)["unreachable"]] == [bounced.id]
    services.incident_complete(incident=incident, actor=crisis)
    incident.refresh_from_db()
    assert board_snapshot(incident, None)["unreachable"] == []


def test_escalation_leaves_a_failed_channel_failed_and_the_person_listed(
    org: Organization, crisis: User, tree: Tree, push_service: LocalPushService
) -> None:
    gone = safety_person(org, "gone", department=tree.east, email="")
    subscribe(push_service, gone, respond=410)
    incident = incident_make(org, crisis)
    send(incident, crisis)
    assert escalate(incident_id=incident.id, now=first_sent(incident) + 30 * MINUTE) == 1
    # No subscription left to send to: the push row stays failed; in-app was sent again.
    assert rounds(incident, gone) == {"push": 1, "inapp": 2}
    incident.refresh_from_db()
    [listed] = board_snapshot(incident, None)["unreachable"]
    assert listed["id"] == gone.id and listed["reasons"] == ["push_gone", "no_email"]
    assert listed["escalated_at"] is not None
