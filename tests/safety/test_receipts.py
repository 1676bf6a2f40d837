"""Receipts: the service worker says a push was delivered or opened, and opening an answer page says the link
was opened. A delivery only moves forward (queued/failed → sent → delivered → opened → answered), its
`delivered_at` and `opened_at` are set once, and a bad receipt is a 400 or 404 that changes nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from config.errors import ApplicationError
from safety import services
from safety.models import Answer, Delivery, DeliveryState
from safety.tokens import answer_token
from tests.conftest import signed_in
from tests.safety.conftest import answer, incident_make, safety_person, send, subscribe

pytestmark = pytest.mark.django_db


def token_for(incident: Any, person: Any) -> str:
    return answer_token(organization_id=incident.organization_id, incident_id=incident.id, person_id=person.id)


def receipt_url(token: str, slug: str = "acme") -> str:
    return f"/{slug}/api/safety/answer/{token}/receipt/"


def row(incident: Any, person: Any, channel: str = "push") -> Delivery:
    return Delivery.objects.get(incident=incident, person=person, channel=channel)


def rows(incident: Any, person: Any) -> dict[str, tuple[Any, ...]]:
    return {
        d.channel: (d.state, d.sent_at, d.delivered_at, d.opened_at, d.error, d.updated_at)
        for d in Delivery.objects.filter(incident=incident, person=person)
    }


@pytest.fixture
def anon() -> Client:
    """A service worker's fetch: no cookies, and a CSRF check that would refuse it if one were asked."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def hanako(org):
    return safety_person(org, "hanako")


@pytest.fixture
def pushed(org, crisis, incident, hanako, push_service):
    """The incident, sent to hanako on push (she has a subscription), e-mail and in the app."""
    subscribe(push_service, hanako)
    send(incident, crisis)
    assert {d.channel: d.state for d in Delivery.objects.filter(person=hanako)} == {
        "push": "sent",
        "email": "sent",
        "inapp": "sent",
    }
    return incident


# --- the service ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "event", "after"),
    [
        ("queued", "delivered", "delivered"),  # the receipt came before the sender marked it sent
        ("failed", "delivered", "delivered"),  # it evidently arrived
        ("sent", "delivered", "delivered"),
        ("delivered", "delivered", "delivered"),
        ("opened", "delivered", "opened"),  # a late "delivered" never takes it back
        ("answered", "delivered", "answered"),
        ("queued", "opened", "opened"),
        ("failed", "opened", "opened"),
        ("sent", "opened", "opened"),
        ("delivered", "opened", "opened"),
        ("opened", "opened", "opened"),
        ("answered", "opened", "answered"),  # opening never downgrades an answer
    ],
)
def test_a_receipt_moves_the_delivery_forward_only(pushed, hanako, before, event, after):
    # A queued row moves only while a sender holds it (the receipt beat the sender's "sent").
    Delivery.objects.filter(incident=pushed, person=hanako, channel="push").update(
        state=before,
        error="410 Gone" if before == "failed" else "",
        claimed_at=timezone.now() if before == "queued" else None,
    )
    assert services.delivery_report(incident_id=pushed.id, person_id=hanako.id, channel="push", event=event) == after
    delivery = row(pushed, hanako)
    assert delivery.state == after
    assert delivery.delivered_at is not None  # "opened" implies delivered
    assert (delivery.opened_at is not None) == (event == "opened")
    assert delivery.error == ""  # a failed row that arrived is no longer failing
    assert delivery.sent_at is not None


def test_times_are_set_once_by_the_first_receipt(pushed, hanako):
    first = timezone.now() - timedelta(minutes=5)
    later = first + timedelta(minutes=2)
    services.delivery_report(incident_id=pushed.id, person_id=hanako.id, channel="push", event="delivered", now=first)
    services.delivery_report(incident_id=pushed.id, person_id=hanako.id, channel="push", event="delivered", now=later)
    delivery = row(pushed, hanako)
    assert (delivery.state, delivery.delivered_at, delivery.opened_at) == ("delivered", first, None)
    services.delivery_report(incident_id=pushed.id, person_id=hanako.id, channel="push", event="opened", now=later)
    services.delivery_report(
        incident_id=pushed.id, person_id=hanako.id, channel="push", event="opened", now=later + timedelta(minutes=1)
    )
    delivery = row(pushed, hanako)
    assert (delivery.state, delivery.delivered_at, delivery.opened_at) == ("opened", first, later)


def test_opened_without_delivered_sets_both_times(pushed, hanako):
    at = timezone.now() - timedelta(minutes=1)
    services.delivery_report(incident_id=pushed.id, person_id=hanako.id, channel="push", event="opened", now=at)
    delivery = row(pushed, hanako)
    assert (delivery.state, delivery.delivered_at, delivery.opened_at) == ("opened", at, at)


def test_a_receipt_after_the_answer_keeps_answered_but_records_the_times(pushed, hanako):
    answer(pushed, hanako)
    assert services.delivery_report(incident_id=pushed.id, person_id=hanako.id, channel="push", event="opened") == (
        "answered"
    )
    delivery = row(pushed, hanako)
    assert delivery.state == "answered" and delivery.delivered_at and delivery.opened_at


def test_a_receipt_touches_only_its_own_channel_and_person(org, pushed, hanako, crisis):
    other = safety_person(org, "other")
    send(pushed, crisis, {"mode": "chosen", "person_ids": [other.id]})
    before_other = rows(pushed, other)
    services.delivery_report(incident_id=pushed.id, person_id=hanako.id, channel="push", event="opened")
    assert {d.channel: d.state for d in Delivery.objects.filter(incident=pushed, person=hanako)} == {
        "push": "opened",
        "email": "sent",
        "inapp": "sent",
    }
    assert rows(pushed, other) == before_other


def test_a_receipt_for_a_channel_without_a_delivery_changes_nothing(pushed, org, crisis, incident):
    nopush = safety_person(org, "nopush")
    send(incident, crisis, {"mode": "chosen", "person_ids": [nopush.id]})
    assert services.delivery_report(incident_id=incident.id, person_id=nopush.id, channel="push", event="opened") == ""
    assert not Delivery.objects.filter(person=nopush, channel="push").exists()


@pytest.mark.parametrize(("channel", "event"), [("push", "answered"), ("push", "sent"), ("sms", "opened")])
def test_the_service_refuses_an_unknown_receipt(pushed, hanako, channel, event):
    before = rows(pushed, hanako)
    with pytest.raises(ApplicationError) as raised:
        services.delivery_report(incident_id=pushed.id, person_id=hanako.id, channel=channel, event=event)
    assert raised.value.code == "bad_receipt"
    assert rows(pushed, hanako) == before


# --- the receipt API (what the service worker posts) -------------------------------------------------------------


def test_service_worker_receipts_without_a_session(anon, pushed, hanako):
    url = receipt_url(token_for(pushed, hanako))
    delivered = anon.post(url, {"event": "delivered"}, content_type="application/json")
    assert delivered.status_code == 200, delivered.content
    assert delivered.json() == {"state": "delivered"}  # the channel is push unless said
    opened = anon.post(url, {"event": "opened", "channel": "push"}, content_type="application/json")
    assert opened.json() == {"state": "opened"}
    late = anon.post(url, {"event": "delivered"}, content_type="application/json")
    assert late.status_code == 200 and late.json() == {"state": "opened"}
    assert row(pushed, hanako).state == "opened" and row(pushed, hanako, "email").state == "sent"
    assert anon.post(url, {"event": "opened", "channel": "email"}, content_type="application/json").json() == {
        "state": "opened"
    }
    assert row(pushed, hanako, "email").state == "opened"


def test_a_receipt_for_a_missing_delivery_says_null(anon, org, crisis, incident):
    nopush = safety_person(org, "nopush")
    send(incident, crisis)
    response = anon.post(receipt_url(token_for(incident, nopush)), {"event": "opened"}, content_type="application/json")
    assert response.status_code == 200 and response.json() == {"state": None}


@pytest.mark.parametrize(
    "body",
    [
        {"event": "answered"},
        {"event": "sent"},
        {"event": ""},
        {},
        {"event": "opened", "channel": "sms"},
        {"event": ["opened"]},
        ["opened"],
        "opened",
    ],
)
def test_a_bad_receipt_is_a_400_and_changes_nothing(anon, pushed, hanako, body):
    before = rows(pushed, hanako)
    response = anon.post(receipt_url(token_for(pushed, hanako)), body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["message"]
    assert rows(pushed, hanako) == before


def test_a_receipt_that_is_not_json_is_a_4xx_not_a_500(anon, pushed, hanako):
    before = rows(pushed, hanako)
    url = receipt_url(token_for(pushed, hanako))
    assert anon.post(url, "{not json", content_type="application/json").status_code == 400
    assert anon.post(url, "opened", content_type="text/plain").status_code == 415
    assert anon.get(url).status_code == 405
    assert rows(pushed, hanako) == before


def test_a_receipt_with_a_bad_token_is_a_404_and_changes_nothing(anon, org, other_org, crisis, pushed, hanako):
    before = rows(pushed, hanako)
    token = token_for(pushed, hanako)
    payload, stamp, signature = token.split(":")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    foreign = answer_token(organization_id=other_org.id, incident_id=pushed.id, person_id=hanako.id)
    for url in (
        receipt_url(f"{payload}:{stamp}:{flipped}"),
        receipt_url("x" * 20),
        receipt_url(token, slug="globex"),  # another organisation's address
        receipt_url(foreign),
        receipt_url(foreign, slug="globex"),
    ):
        response = anon.post(url, {"event": "opened"}, content_type="application/json")
        assert response.status_code == 404, url
        assert response.json()["code"] == "not_found"
    hanako.is_active = False
    hanako.save(update_fields=["is_active"])
    assert anon.post(receipt_url(token), {"event": "opened"}, content_type="application/json").status_code == 404
    assert rows(pushed, hanako) == before


def test_receipts_are_throttled_apart_from_answers(anon, pushed, hanako):
    url = receipt_url(token_for(pushed, hanako))
    codes = [anon.post(url, {"event": "delivered"}, content_type="application/json").status_code for _ in range(31)]
    assert codes[:30] == [200] * 30 and codes[30] == 429
    # The answer has its own budget.
    answered = anon.post(
        f"/acme/api/safety/answer/{token_for(pushed, hanako)}/",
        {"values": {"safety": "safe"}},
        content_type="application/json",
    )
    assert answered.status_code == 200


# --- opening the pages ------------------------------------------------------------------------------------------


def test_opening_the_link_from_the_notification_marks_the_push_opened(client, pushed, hanako):
    page = services.answer_url(pushed, hanako.id)
    assert client.get(page + "?via=push").status_code == 200
    assert row(pushed, hanako).state == "opened" and row(pushed, hanako).opened_at is not None
    assert row(pushed, hanako, "email").state == "sent"


@pytest.mark.parametrize("query", ["?via=mail", "", "?lang=en"])
def test_opening_the_link_from_the_mail_marks_the_email_opened(client, pushed, hanako, query):
    assert client.get(services.answer_url(pushed, hanako.id) + query).status_code == 200
    assert row(pushed, hanako, "email").state == "opened"
    assert row(pushed, hanako).state == "sent"


def test_opening_the_link_after_answering_keeps_answered(client, pushed, hanako):
    answer(pushed, hanako)
    page = services.answer_url(pushed, hanako.id)
    for query in ("?via=push", "?via=mail"):
        assert client.get(page + query).status_code == 200
    assert {d.channel: d.state for d in Delivery.objects.filter(person=hanako)} == {
        "push": "answered",
        "email": "answered",
        "inapp": "answered",
    }


def test_a_bad_link_marks_nothing(client, pushed, hanako):
    before = rows(pushed, hanako)
    assert client.get("/acme/answer/" + "x" * 30 + "/?via=push").status_code == 404
    assert rows(pushed, hanako) == before


def test_opening_the_answer_page_in_the_app_marks_inapp_opened(pushed, hanako):
    client = signed_in(hanako)
    assert client.get(f"/acme/safety/{pushed.id}/").status_code == 200
    assert row(pushed, hanako, "inapp").state == "opened"
    assert row(pushed, hanako).state == "sent" and row(pushed, hanako, "email").state == "sent"


def test_the_mail_link_says_it_came_from_the_mail(org, crisis, smtp_server):
    incident = incident_make(org, crisis)
    person = safety_person(org, "mailed")
    send(incident, crisis)
    [message] = smtp_server.messages
    body = message.get_content().replace("\r\n", "\n")
    assert services.answer_url(incident, person.id) + "?via=mail" in body
    assert row(incident, person, "email").state == DeliveryState.SENT


def test_a_late_receipt_of_the_last_round_does_not_cancel_a_resend(org, crisis, hanako, push_service):
    subscribe(push_service, hanako)
    incident = incident_make(org, crisis)
    send(incident, crisis)
    before = len(push_service.received)
    again = services.dispatch_create(
        incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [hanako.id]}
    )
    # The phone comes back online and reports the first push; then the resend runs.
    response = Client().post(
        receipt_url(token_for(incident, hanako)), {"event": "delivered"}, content_type="application/json"
    )
    assert response.status_code == 200
    assert row(incident, hanako).state == "queued"
    services.dispatch_run(dispatch_id=again.id)
    assert len(push_service.received) == before + 1
    delivery = row(incident, hanako)
    assert (delivery.state, delivery.round, delivery.delivered_at) == ("sent", 2, None)


def test_a_resend_to_someone_who_answered_still_shows_answered(org, crisis, hanako, push_service):
    subscribe(push_service, hanako)
    incident = incident_make(org, crisis)
    send(incident, crisis)
    answer(incident, hanako)
    again = services.dispatch_create(
        incident=incident, actor=crisis, target={"mode": "chosen", "person_ids": [hanako.id]}
    )
    services.dispatch_run(dispatch_id=again.id)
    assert row(incident, hanako).state == "answered"
    assert row(incident, hanako, "email").state == "answered"


@pytest.mark.parametrize("suffix", ["", "receipt/"])
def test_deeply_nested_json_is_a_400(org, crisis, hanako, suffix):
    incident = incident_make(org, crisis)
    send(incident, crisis, run=False)
    body = '{"values":' + "[" * 100000 + "]" * 100000 + "}"
    url = f"/acme/api/safety/answer/{token_for(incident, hanako)}/{suffix}"
    response = Client(raise_request_exception=False).post(url, body, content_type="application/json")
    assert response.status_code == 400
    assert "message" in response.json()


@pytest.mark.parametrize("text", ["a\u0000b", "a\ud800b"])
def test_a_comment_with_a_nul_or_a_lone_surrogate_is_stored_without_it(org, crisis, hanako, text):
    incident = incident_make(org, crisis)
    send(incident, crisis, run=False)
    url = f"/acme/api/safety/answer/{token_for(incident, hanako)}/"
    body = json.dumps({"values": {"safety": "safe", "comment": text}})
    response = Client(raise_request_exception=False).post(url, body, content_type="application/json")
    assert response.status_code == 200
    assert Answer.objects.get(incident=incident, person=hanako).values["comment"] == "ab"
