"""Sending an incident: who it reaches, one delivery row per (incident, person, channel), resends, idempotent and
resumable runs, and what arrives at the local push service and the SMTP server. Also the notices that go out
later: the administrators' link when an incident opens, and the end notice."""

from __future__ import annotations

import re
import secrets
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.utils import timezone, translation
from django.utils.translation import gettext

from config.errors import ApplicationError
from consumers.mail import message_id_for
from consumers.models import PushSubscription
from directory.models import Role
from safety import selectors, services
from safety.models import (
    Channel,
    Delivery,
    DeliveryState,
    Dispatch,
    Incident,
    IncidentStatus,
    Recipient,
)
from safety.tasks import safety_scan
from safety.tokens import answer_token_read
from tests import factories
from tests.safety.conftest import (
    age,
    answer,
    incident_make,
    mail_recipients,
    pushes_by_person,
    safety_person,
    send,
    subscribe,
)
from tests.services import free_port

pytestmark = pytest.mark.django_db


def states(incident: Incident) -> dict[tuple[int, str], tuple[str, int]]:
    return {
        (d.person_id, d.channel): (d.state, d.round) for d in Delivery.objects.filter(incident=incident).order_by("id")
    }


def target_ids(incident: Incident, target: dict[str, Any]) -> list[int]:
    return selectors.target_people_ids(incident=incident, target=services.target_clean(incident.organization, target))


# --- who a send reaches ------------------------------------------------------------------------------------


def test_only_active_people_with_a_safety_id_are_sent_to(org, other_org, crisis, incident):
    asked = safety_person(org, "asked")
    safety_person(org, "no-anpi", anpi=False)
    left = safety_person(org, "left")
    left.is_active = False
    left.save()
    safety_person(other_org, "foreign")
    dispatch = send(incident, crisis)
    assert dispatch.recipients == 1
    assert list(Recipient.objects.values_list("person_id", flat=True)) == [asked.id]
    assert set(Delivery.objects.values_list("person_id", flat=True)) == {asked.id}


def test_filter_by_department_reaches_the_whole_subtree(org, crisis, incident, tree):
    hq = safety_person(org, "hq", department=tree.hq)
    sales = safety_person(org, "sales", department=tree.sales)
    east = safety_person(org, "east", department=tree.east)
    safety_person(org, "plant", department=tree.plant)
    safety_person(org, "nowhere")
    assert target_ids(incident, {"mode": "filter", "department_ids": [tree.sales.id]}) == [sales.id, east.id]
    assert target_ids(incident, {"mode": "filter", "department_ids": [tree.hq.id]}) == [hq.id, sales.id, east.id]


def test_filter_by_region_and_role(org, crisis, incident, tree):
    tokyo = safety_person(org, "tokyo", region_code="13")
    osaka_manager = safety_person(org, "osaka-m", region_code="27", roles=(Role.MANAGER,))
    safety_person(org, "osaka", region_code="27")
    tokyo_manager = safety_person(org, "tokyo-m", region_code="13", roles=(Role.MANAGER,))
    assert target_ids(incident, {"mode": "filter", "regions": ["13"]}) == [tokyo.id, tokyo_manager.id]
    assert target_ids(incident, {"mode": "filter", "roles": ["MANAGER"]}) == [osaka_manager.id, tokyo_manager.id]
    assert target_ids(incident, {"mode": "filter", "regions": ["27"], "roles": ["MANAGER"]}) == [osaka_manager.id]


def test_filter_unanswered_reaches_people_not_yet_answered_including_new_ones(org, crisis, incident):
    answered = safety_person(org, "answered")
    silent = safety_person(org, "silent")
    send(incident, crisis)
    answer(incident, answered)
    newcomer = safety_person(org, "newcomer")
    assert target_ids(incident, {"mode": "filter", "answer": "unanswered"}) == [silent.id, newcomer.id]
    assert target_ids(incident, {"mode": "filter", "answer": "answered"}) == [answered.id]


def test_chosen_people_only(org, crisis, incident):
    a, b = safety_person(org, "a"), safety_person(org, "b")
    safety_person(org, "c")
    no_id = safety_person(org, "no-id", anpi=False)
    assert target_ids(incident, {"mode": "chosen", "person_ids": [b.id, a.id, no_id.id]}) == [a.id, b.id]


@pytest.mark.parametrize(
    "target",
    [
        {"mode": "some"},
        {"mode": "chosen", "person_ids": []},
        {"mode": "chosen", "person_ids": ["1"]},
        {"mode": "filter", "regions": ["99"]},
        {"mode": "filter", "roles": ["KING"]},
        {"mode": "filter", "answer": "maybe"},
        {"mode": "filter", "department_ids": [True]},
    ],
)
def test_bad_targets_are_refused(org, crisis, incident, target):
    with pytest.raises(ApplicationError) as raised:
        services.dispatch_create(incident=incident, actor=crisis, target=target)
    assert raised.value.code == "bad_target" and not Dispatch.objects.exists()


@pytest.mark.parametrize("target", ["everyone", ["everyone"], 7, None])
def test_a_target_that_is_not_an_object_is_a_400_not_a_server_error(org, crisis, crisis_client, incident, target):
    """BUG: dispatch_create calls dict(target) before target_clean checks it is an object."""
    safety_person(org, "someone")
    crisis_client.raise_request_exception = False
    url = f"/acme/api/safety/incidents/{incident.id}/dispatches/"
    response = crisis_client.post(url, {"target": target}, content_type="application/json")
    assert response.status_code == 400, response.status_code
    assert response.json()["code"] in {"bad_target", "invalid"} and not Dispatch.objects.exists()


def test_people_and_departments_of_another_organisation_cannot_be_targeted(org, other_org, crisis, incident):
    safety_person(org, "mine")
    foreign = safety_person(other_org, "foreign")
    foreign_department = factories.department(other_org, "X")
    for target in (
        {"mode": "chosen", "person_ids": [foreign.id]},
        {"mode": "filter", "department_ids": [foreign_department.id]},
    ):
        with pytest.raises(ApplicationError) as raised:
            services.dispatch_create(incident=incident, actor=crisis, target=target)
        assert raised.value.code == "bad_target"
    assert not Delivery.objects.exists() and not Recipient.objects.exists()


def test_a_send_that_reaches_nobody_is_refused(org, crisis, incident):
    safety_person(org, "no-id", anpi=False)
    with pytest.raises(ApplicationError) as raised:
        services.dispatch_create(incident=incident, actor=crisis, target={"mode": "everyone"})
    assert raised.value.code == "no_recipients"
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.DRAFT and not Dispatch.objects.exists()


# --- delivery rows ------------------------------------------------------------------------------------------


def test_each_person_gets_a_row_per_channel_they_have(org, crisis, incident, push_service):
    everything = safety_person(org, "everything")
    subscribe(push_service, everything)
    subscribe(push_service, everything)  # two devices: still one push row
    mail_only = safety_person(org, "mail-only")
    second_address = safety_person(org, "second", email="")
    second_address.email2 = "second@home.example"
    second_address.save()
    app_only = safety_person(org, "app-only", email="")
    push_only = safety_person(org, "push-only", email="")
    subscribe(push_service, push_only)
    send(incident, crisis, run=False)
    rows = states(incident)
    assert rows == {
        (everything.id, "push"): ("queued", 1),
        (everything.id, "email"): ("queued", 1),
        (everything.id, "inapp"): ("sent", 1),
        (mail_only.id, "email"): ("queued", 1),
        (mail_only.id, "inapp"): ("sent", 1),
        (second_address.id, "email"): ("queued", 1),
        (second_address.id, "inapp"): ("sent", 1),
        (app_only.id, "inapp"): ("sent", 1),
        (push_only.id, "push"): ("queued", 1),
        (push_only.id, "inapp"): ("sent", 1),
    }
    assert all(d.sent_at for d in Delivery.objects.filter(channel=Channel.INAPP))


def test_resend_requeues_the_same_rows_with_the_next_round(org, crisis, incident, push_service, smtp_server):
    answered, silent = safety_person(org, "answered"), safety_person(org, "silent")
    for person in (answered, silent):
        subscribe(push_service, person)
    first = send(incident, crisis)
    answer(incident, answered)
    ids_before = set(Delivery.objects.values_list("id", flat=True))
    second = send(incident, crisis, {"mode": "filter", "answer": "unanswered"})
    assert (first.number, second.number, second.recipients) == (1, 2, 1)
    assert set(Delivery.objects.values_list("id", flat=True)) == ids_before  # never a second row
    rows = states(incident)
    assert rows[(silent.id, "push")] == ("sent", 2) and rows[(silent.id, "email")] == ("sent", 2)
    assert rows[(silent.id, "inapp")] == ("sent", 2)
    assert rows[(answered.id, "push")] == ("answered", 1)
    assert Delivery.objects.get(person=silent, channel="push").dispatch_id == second.id
    assert {p: len(v) for p, v in pushes_by_person(push_service).items()} == {answered.id: 1, silent.id: 2}
    assert mail_recipients(smtp_server.messages).count(silent.email) == 2
    assert Recipient.objects.filter(incident=incident).count() == 2


def test_a_mail_sent_again_after_a_crash_has_the_same_message_id_and_a_resend_a_new_one(
    org, crisis, incident, smtp_server, settings
):
    settings.DEFAULT_FROM_EMAIL = "Tsunagu <anpi@acme.example>"
    hanako = safety_person(org, "hanako")
    send(incident, crisis)
    # A worker that died after the server accepted the mail and before the mark: the row is queued again.
    Delivery.objects.filter(person=hanako, channel="email").update(state=DeliveryState.QUEUED, claimed_at=None)
    Dispatch.objects.filter(incident=incident).update(finished_at=None)
    services.dispatch_run(dispatch_id=Dispatch.objects.get(incident=incident).id)
    send(incident, crisis)  # a resend: the next round
    first, again, resend = (m["Message-ID"] for m in smtp_server.messages)
    assert first == again != resend
    for message_id in (first, resend):
        assert re.fullmatch(r"<[0-9a-f]{40}@acme\.example>", message_id), message_id  # a hash: no ids shown
    # Another installation (another SECRET_KEY), or this one restored with its ids starting again (another
    # incident created at another time), never makes the same Message-ID.
    restored_at = (incident.created_at + timedelta(days=30)).isoformat()
    assert message_id_for(incident.id, restored_at, hanako.id, 1) != first
    settings.SECRET_KEY = secrets.token_urlsafe(50)  # another installation
    assert message_id_for(incident.id, incident.created_at.isoformat(), hanako.id, 1) != first


def test_a_resend_adds_rows_for_people_new_to_the_incident(org, crisis, incident):
    first = safety_person(org, "first")
    send(incident, crisis, run=False)
    newcomer = safety_person(org, "newcomer")
    send(incident, crisis, run=False)
    rows = states(incident)
    assert rows[(first.id, "email")] == ("queued", 2) and rows[(newcomer.id, "email")] == ("queued", 1)
    assert Recipient.objects.get(person=newcomer).first_dispatch.number == 2
    assert Recipient.objects.get(person=first).first_dispatch.number == 1


# --- running a send: idempotent, concurrent, resumable ----------------------------------------------------


def test_running_a_send_twice_sends_each_push_and_mail_once(org, crisis, incident, push_service, smtp_server):
    people = [safety_person(org, f"p{n}") for n in range(5)]
    for person in people:
        subscribe(push_service, person)
    dispatch = send(incident, crisis, run=False)
    assert services.dispatch_run(dispatch_id=dispatch.id, batch=2) == 10
    assert services.dispatch_run(dispatch_id=dispatch.id, batch=2) == 0
    assert Delivery.objects.filter(state=DeliveryState.QUEUED).count() == 0
    # the finished send is also run again as if the broker redelivered it after the scan resumed it
    Dispatch.objects.filter(id=dispatch.id).update(finished_at=None)
    assert services.dispatch_run(dispatch_id=dispatch.id) == 0
    assert len(push_service.received) == 5 and not push_service.rejected
    assert mail_recipients(smtp_server.messages) == sorted(p.email for p in people)


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_each_push_and_mail_once(org, crisis, push_service, smtp_server, monkeypatch):
    from safety import tasks

    monkeypatch.setattr(tasks.dispatch_run, "delay", lambda dispatch_id: None)  # the two workers below run it
    incident = incident_make(org, crisis)
    people = [safety_person(org, f"w{n}") for n in range(8)]
    for person in people:
        subscription = subscribe(push_service, person)
        push_service.set_response(subscription.endpoint, 201, delay=0.1)
    dispatch = send(incident, crisis, run=False)
    start = threading.Barrier(2)
    handled: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            handled.append(services.dispatch_run(dispatch_id=dispatch.id, batch=1))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sum(handled) == 16 and all(handled), handled  # both worked, and together they handled each row once
    assert len(push_service.received) == 8
    assert sorted(p.path for p in push_service.received) == sorted(
        s.endpoint.removeprefix(push_service.base_url) for s in PushSubscription.objects.all()
    )
    assert mail_recipients(smtp_server.messages) == sorted(p.email for p in people)
    assert set(Delivery.objects.values_list("state", flat=True)) == {"sent"}
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.ACCEPTING


def test_scan_resumes_a_send_whose_worker_died_without_duplicates(org, crisis, incident, push_service, smtp_server):
    people = [safety_person(org, f"d{n}") for n in range(4)]
    for person in people:
        subscribe(push_service, person)
    dispatch = send(incident, crisis, run=False)
    # A worker sent the first person's push and mail, claimed the rest, then died.
    done = Delivery.objects.filter(person=people[0]).exclude(channel=Channel.INAPP)
    done.update(state=DeliveryState.SENT, sent_at=timezone.now())
    Delivery.objects.filter(state=DeliveryState.QUEUED).update(claimed_at=timezone.now() - timedelta(seconds=60))
    Dispatch.objects.filter(id=dispatch.id).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    assert services.stalled_dispatch_ids() == [dispatch.id]
    result = safety_scan()
    assert result["resumed"] == 1
    assert set(pushes_by_person(push_service)) == {p.id for p in people[1:]}
    assert len(push_service.received) == 3
    assert mail_recipients(smtp_server.messages) == sorted(p.email for p in people[1:])
    assert set(Delivery.objects.values_list("state", flat=True)) == {"sent"}
    assert services.stalled_dispatch_ids() == []
    assert safety_scan()["resumed"] == 0 and len(push_service.received) == 3


def test_a_live_workers_claims_are_left_alone(org, crisis, incident, push_service):
    person = safety_person(org, "claimed")
    subscribe(push_service, person)
    dispatch = send(incident, crisis, run=False)
    Delivery.objects.filter(state=DeliveryState.QUEUED).update(claimed_at=timezone.now())
    assert services.stalled_dispatch_ids() == []
    assert services.dispatch_run(dispatch_id=dispatch.id) == 0  # another worker holds them: nothing sent twice
    assert push_service.received == []
    dispatch.refresh_from_db()
    assert dispatch.finished_at is None  # the holder (or the scan) finishes it


def test_a_slow_batch_keeps_its_claim_so_the_scan_does_not_send_it_twice(
    org, crisis, incident, push_service, settings, monkeypatch
):
    settings.SAFETY_CLAIM_STALE_SECONDS = 3  # renewed every second while the batch is on the wire
    person = safety_person(org, "slow", email="")
    subscription = subscribe(push_service, person)
    push_service.set_response(subscription.endpoint, 201, delay=2.5)
    dispatch = send(incident, crisis, run=False)
    renewed: list[Any] = []
    real_touch = services._touch

    def touch(dispatch: Any, rows: Any) -> None:
        real_touch(dispatch, rows)
        renewed.append(Delivery.objects.get(person=person, channel="push").claimed_at)
        # Meanwhile the scan looks: the send is alive and its rows are held.
        assert services.stalled_dispatch_ids(now=timezone.now() + timedelta(seconds=2)) == []

    monkeypatch.setattr(services, "_touch", touch)
    assert services.dispatch_run(dispatch_id=dispatch.id) == 1
    assert len(renewed) == 2 and renewed[0] < renewed[1]
    assert len(push_service.received) == 1
    assert Delivery.objects.get(person=person, channel="push").state == DeliveryState.SENT


def test_a_send_with_a_stale_heartbeat_and_no_claims_is_found(org, crisis, incident):
    safety_person(org, "someone")
    dispatch = send(incident, crisis, run=False)
    assert services.stalled_dispatch_ids() == []  # just created: its task is on the way
    age(dispatch, seconds=31)
    assert services.stalled_dispatch_ids() == [dispatch.id]


def test_mail_server_down_leaves_mail_for_the_scan(org, crisis, incident, smtp_server, settings):
    people = [safety_person(org, f"m{n}") for n in range(2)]
    dispatch = send(incident, crisis, run=False)
    working_port = settings.EMAIL_PORT
    settings.EMAIL_PORT = free_port()  # nothing listens there
    services.dispatch_run(dispatch_id=dispatch.id)
    dispatch.refresh_from_db()
    assert dispatch.finished_at is None and smtp_server.messages == []
    assert Delivery.objects.filter(channel="email", state="queued").count() == 2
    settings.EMAIL_PORT = working_port
    Delivery.objects.filter(channel="email").update(claimed_at=timezone.now() - timedelta(seconds=60))
    age(dispatch)
    safety_scan()
    assert mail_recipients(smtp_server.messages) == sorted(p.email for p in people)
    dispatch.refresh_from_db()
    assert dispatch.finished_at is not None


# --- what arrives -----------------------------------------------------------------------------------------


def test_push_carries_the_persons_own_signed_link(org, crisis, incident, push_service):
    hanako, taro = safety_person(org, "hanako"), safety_person(org, "taro")
    for person in (hanako, taro):
        subscribe(push_service, person)
    send(incident, crisis)
    received = pushes_by_person(push_service)
    for person in (hanako, taro):
        [payload] = received[person.id]
        assert payload["tag"] == f"incident-{incident.id}" and payload["kind"] == "safety"
        assert payload["title"] == incident.title and payload["body"] == "安否を回答してください。"
        path = urlsplit(payload["url"]).path
        assert path.startswith("/acme/answer/")
        link = answer_token_read(path.removeprefix("/acme/answer/").rstrip("/"))
        assert link is not None
        assert (link.organization_id, link.incident_id, link.person_id) == (org.id, incident.id, person.id)
    push = push_service.received[0]
    assert push.urgency == "high" and push.ttl > 0 and push.headers["topic"] == f"incident{incident.id}"


def test_an_answer_from_the_push_link_is_recorded_as_from_the_notification(org, crisis, incident, push_service):
    """BUG: the push's url is the bare answer link, and the service worker opens it as it is, so the answer page
    never learns it came from the notification (it reads ?via=push) and the source "push" is never recorded."""
    person = safety_person(org, "pushed")
    subscribe(push_service, person)
    send(incident, crisis)
    [payload] = pushes_by_person(push_service)[person.id]
    assert parse_qs(urlsplit(payload["url"]).query) == {"via": ["push"]}


def test_drill_push_and_mail_say_it_is_a_drill(org, crisis, push_service, smtp_server):
    incident = incident_make(org, crisis, is_drill=True)
    person = safety_person(org, "drill", language="en")
    subscribe(push_service, person)
    send(incident, crisis)
    [payload] = pushes_by_person(push_service)[person.id]
    assert payload["title"] == f"[訓練] {incident.title}"
    [message] = smtp_server.messages
    # in the person's language (stripped: Python folds this long encoded header right after "Subject:")
    assert message["Subject"].strip() == f"[DRILL] {incident.title}"


def test_mail_carries_the_link_in_the_persons_language(org, crisis, incident, smtp_server):
    english = safety_person(org, "english", language="en")
    japanese = safety_person(org, "japanese", language="ja")
    send(incident, crisis)
    by_address = {m["To"]: m for m in smtp_server.messages}
    for person, language in ((english, "en"), (japanese, "ja")):
        message = by_address[person.email]
        body = message.get_content().replace("\r\n", "\n")
        token = answer_token_read(body.split("/acme/answer/")[1].split("/")[0])
        assert token is not None and token.person_id == person.id and token.incident_id == incident.id
        assert message["Subject"] == incident.title and incident.message in body
        assert message["Content-Language"] == language
        with translation.override(language):
            assert gettext("Answer here (no sign-in needed):") in body
    assert "Answer here (no sign-in needed):" in by_address[english.email].get_content()


def test_a_gone_push_endpoint_fails_the_delivery_and_drops_the_subscription(org, crisis, incident, push_service):
    gone, fine = safety_person(org, "gone"), safety_person(org, "fine")
    subscribe(push_service, gone, respond=410)
    subscribe(push_service, fine)
    send(incident, crisis)
    failed = Delivery.objects.get(person=gone, channel="push")
    assert failed.state == DeliveryState.FAILED and "410" in failed.error
    assert not PushSubscription.objects.filter(user=gone).exists()
    assert Delivery.objects.get(person=fine, channel="push").state == DeliveryState.SENT
    assert PushSubscription.objects.filter(user=fine).exists()


def test_a_refused_mail_recipient_fails_that_delivery_only(org, crisis, incident, smtp_server, monkeypatch):
    from aiosmtpd.smtp import SMTP

    real_rcpt = SMTP.smtp_RCPT

    async def refuse(self, arg):
        if arg and "refused" in arg:
            await self.push("550 no such user")
            return None
        return await real_rcpt(self, arg)

    monkeypatch.setattr(SMTP, "smtp_RCPT", refuse)
    refused, fine = safety_person(org, "refused"), safety_person(org, "fine")
    send(incident, crisis)
    failed = Delivery.objects.get(person=refused, channel="email")
    assert failed.state == DeliveryState.FAILED and "refused" in failed.error
    assert Delivery.objects.get(person=fine, channel="email").state == DeliveryState.SENT
    assert mail_recipients(smtp_server.messages) == [fine.email]


# --- incident status around sends ---------------------------------------------------------------------------


def test_status_moves_from_draft_to_sending_to_accepting(org, crisis, incident, django_capture_on_commit_callbacks):
    safety_person(org, "someone")
    assert incident.status == IncidentStatus.DRAFT
    with django_capture_on_commit_callbacks(execute=False):
        dispatch = services.dispatch_create(incident=incident, actor=crisis, target={"mode": "everyone"})
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.SENDING and incident.opened_at is not None
    services.dispatch_run(dispatch_id=dispatch.id)
    incident.refresh_from_db()
    dispatch.refresh_from_db()
    assert incident.status == IncidentStatus.ACCEPTING and dispatch.finished_at is not None


def test_completing_stops_further_sending(org, crisis, incident, push_service):
    people = [safety_person(org, f"c{n}") for n in range(3)]
    for person in people:
        subscribe(push_service, person)
    dispatch = send(incident, crisis, run=False)
    services.incident_complete(incident=incident, actor=crisis)
    assert services.dispatch_run(dispatch_id=dispatch.id) == 0
    assert push_service.received == []
    assert Delivery.objects.filter(channel="push", state="queued").count() == 3
    with pytest.raises(ApplicationError) as raised:
        services.dispatch_create(incident=incident, actor=crisis, target={"mode": "everyone"})
    assert raised.value.code == "incident_completed" and raised.value.status == 409


def test_completing_in_the_middle_of_a_send_stops_it(org, crisis, incident, push_service, monkeypatch):
    people = [safety_person(org, f"c{n}", email="") for n in range(3)]
    for person in people:
        subscribe(push_service, person)
    dispatch = send(incident, crisis, run=False)
    real_send = services._send_push

    def send_then_complete(dispatch: Any, rows: Any, **kwargs: Any) -> None:
        real_send(dispatch, rows, **kwargs)
        services.incident_complete(incident=incident, actor=crisis)

    monkeypatch.setattr(services, "_send_push", send_then_complete)
    assert services.dispatch_run(dispatch_id=dispatch.id, batch=1) == 1
    assert len(push_service.received) == 1
    assert Delivery.objects.filter(channel="push", state="queued").count() == 2
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.COMPLETED


# --- end to end with Celery on commit -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dispatch_over_the_api_reaches_push_and_mail_through_celery(
    org, crisis, crisis_client, push_service, smtp_server
):
    incident = incident_make(org, crisis)
    phone = safety_person(org, "phone")
    subscribe(push_service, phone)
    mail = safety_person(org, "mail")
    response = crisis_client.post(
        f"/acme/api/safety/incidents/{incident.id}/dispatches/",
        {"target": {"mode": "everyone"}},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["recipients"] == 2
    push_service.wait_for(1)
    [payload] = pushes_by_person(push_service)[phone.id]
    assert payload["url"].startswith("/acme/answer/")
    assert mail_recipients(smtp_server.messages) == sorted([phone.email, mail.email])
    assert set(Delivery.objects.values_list("state", flat=True)) == {"sent"}
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.ACCEPTING
    assert Dispatch.objects.get().finished_at is not None


def test_preview_counts_without_sending(org, crisis, crisis_client, incident, tree):
    safety_person(org, "a", department=tree.east)
    safety_person(org, "b", department=tree.plant)
    response = crisis_client.post(
        f"/acme/api/safety/incidents/{incident.id}/dispatches/",
        {"target": {"mode": "filter", "department_ids": [tree.sales.id]}, "preview": True},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json() == {"recipients": 1}
    assert not Dispatch.objects.exists() and not Delivery.objects.exists()


# --- notices that go out later ---------------------------------------------------------------------------------


def test_end_notice_is_sent_once_with_the_counts(org, crisis, smtp_server):
    now = timezone.now()
    incident = incident_make(
        org,
        crisis,
        tally_start_at=now - timedelta(hours=3),
        end_notice_at=now - timedelta(minutes=1),
        end_notice_addresses=["soumu@acme.example", "boss@acme.example"],
    )
    people = [safety_person(org, f"e{n}", email="") for n in range(4)]
    send(incident, crisis)
    answer(incident, people[0], "safe")
    answer(incident, people[1], "serious", help="yes")
    assert services.end_notices_due() == [incident.id]
    assert safety_scan()["end_notices"] == 1
    assert len(smtp_server.messages) == 1
    message = smtp_server.messages[0]
    assert mail_recipients([message]) == ["boss@acme.example", "soumu@acme.example"]
    body = message.get_content()
    with translation.override("ja"):
        for line in (
            gettext("Asked: %(n)d") % {"n": 4},
            gettext("Answered: %(n)d (%(rate).0f%%)") % {"n": 2, "rate": 50},
            gettext("Safe: %(n)d") % {"n": 1},
            gettext("Serious injury: %(n)d") % {"n": 1},
            gettext("Needs help: %(n)d") % {"n": 1},
            gettext("No answer: %(n)d") % {"n": 2},
        ):
            assert line in body
    assert f"/acme/safety/incidents/{incident.id}/" in body
    incident.refresh_from_db()
    assert incident.end_notice_sent_at is not None
    assert safety_scan()["end_notices"] == 0 and len(smtp_server.messages) == 1


def test_end_notice_not_yet_due_is_not_sent(org, crisis, smtp_server):
    now = timezone.now()
    incident_make(
        org, crisis, tally_start_at=now, end_notice_at=now + timedelta(hours=1), end_notice_addresses=["a@acme.example"]
    )
    assert safety_scan()["end_notices"] == 0 and smtp_server.messages == []


def test_opening_notifies_chosen_admins_and_managers_of_asked_subtrees(
    org, crisis, tree, smtp_server, django_capture_on_commit_callbacks
):
    chosen = factories.person(org, "chosen-admin", roles=(Role.ADMIN_ANPI,))
    sales_manager = factories.person(org, "sales-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales)
    hq_manager = factories.person(org, "hq-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.hq)
    plant_manager = factories.person(org, "plant-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.plant)
    safety_person(org, "east-worker", department=tree.east, email="")
    safety_person(org, "plant-worker", department=tree.plant, email="")
    incident = incident_make(org, crisis, notify_user_ids=[chosen.id])
    with django_capture_on_commit_callbacks(execute=True):
        send(incident, crisis, {"mode": "filter", "department_ids": [tree.sales.id]}, run=False)
    notified = mail_recipients(smtp_server.messages)
    assert notified == sorted([chosen.email, sales_manager.email, hq_manager.email])
    assert plant_manager.email not in notified
    message = smtp_server.messages[0]
    assert f"/acme/safety/incidents/{incident.id}/" in message.get_content()
    incident.refresh_from_db()
    assert incident.notified_at is not None
    assert services.incident_admins_notify(incident_id=incident.id) == 0  # once per incident
    assert len(smtp_server.messages) == 3


def test_managers_are_notified_when_a_later_send_reaches_their_subtree(
    org, crisis, tree, smtp_server, django_capture_on_commit_callbacks
):
    """BUG: the administrators' link goes out once, when the incident opens. An incident opened first (people
    answer in the app) and sent afterwards, or resent to another department, never tells the managers of the
    departments it then reaches."""
    sales_manager = factories.person(org, "sales-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales)
    plant_manager = factories.person(org, "plant-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.plant)
    safety_person(org, "east-worker", department=tree.east, email="")
    safety_person(org, "plant-worker", department=tree.plant, email="")
    incident = incident_make(org, crisis)
    with django_capture_on_commit_callbacks(execute=True):
        services.incident_open(incident=incident, actor=crisis)
    with django_capture_on_commit_callbacks(execute=True):
        send(incident, crisis, {"mode": "filter", "department_ids": [tree.sales.id]}, run=False)
    assert mail_recipients(smtp_server.messages) == [sales_manager.email]
    with django_capture_on_commit_callbacks(execute=True):
        send(incident, crisis, {"mode": "filter", "department_ids": [tree.plant.id]}, run=False)
    assert mail_recipients(smtp_server.messages) == sorted([sales_manager.email, plant_manager.email])


def test_a_slow_mail_batch_keeps_renewing_its_claim(org, crisis, incident, smtp_server, settings, monkeypatch):
    """Without renewal a batch slower than SAFETY_CLAIM_STALE_SECONDS looks abandoned, and the scan (or a second
    runner) would mail it again while it is still being sent."""
    people = [safety_person(org, f"m{n}") for n in range(3)]
    dispatch = send(incident, crisis, run=False)
    renewed: list[set[int]] = []
    real_touch = services._touch

    def touch(dispatch_, rows):
        renewed.append({r.person_id for r in rows})
        real_touch(dispatch_, rows)

    monkeypatch.setattr(services, "_touch", touch)
    settings.SAFETY_CLAIM_STALE_SECONDS = 0  # renew before every message
    services.dispatch_run(dispatch_id=dispatch.id)
    mail_renewals = [r for r in renewed if r == {p.id for p in people}]
    assert len(mail_renewals) >= 3, renewed  # once per message of the one mail batch
    assert sorted(mail_recipients(smtp_server.messages)) == sorted(p.email for p in people)
