"""Answering: the history of every answer, deliveries turning "answered", proxy answers by managers, closed and
foreign incidents, invalid answers that change nothing, and the location."""

from __future__ import annotations

from typing import Any

import pytest

from config.errors import ApplicationError
from directory.models import Role
from safety import services
from safety.models import Answer, AnswerSource, Delivery, DeliveryState, Recipient
from tests import factories
from tests.conftest import signed_in
from tests.safety.conftest import answer, incident_make, pushes_by_person, safety_person, send, subscribe

pytestmark = pytest.mark.django_db


def recipient_state(incident: Any, person: Any) -> tuple[Any, ...]:
    r = Recipient.objects.get(incident=incident, person=person)
    return (r.status, r.needs_help, r.answer_id, r.answer_count, r.first_answered_at, r.answered_at)


def delivery_states(incident: Any, person: Any) -> dict[str, str]:
    return dict(Delivery.objects.filter(incident=incident, person=person).values_list("channel", "state"))


@pytest.fixture
def hanako(org, tree):
    return safety_person(org, "hanako", department=tree.east)


@pytest.fixture
def hanako_client(hanako):
    return signed_in(hanako)


@pytest.fixture
def asked(org, crisis, incident, hanako):
    """The incident, sent (and run) to hanako."""
    send(incident, crisis)
    return incident


def test_every_answer_is_kept_and_the_latest_is_current(asked, hanako):
    first = answer(asked, hanako, "safe")
    second = answer(asked, hanako, "minor", help="yes")
    third = answer(asked, hanako, "serious", comment="足を骨折")
    assert list(Answer.objects.filter(incident=asked, person=hanako).values_list("status", flat=True)) == [
        "safe",
        "minor",
        "serious",
    ]
    recipient = Recipient.objects.get(incident=asked, person=hanako)
    assert recipient.answer_id == third.id and recipient.answer_count == 3
    assert recipient.status == "serious" and not recipient.needs_help  # the latest answer's, not any earlier one
    assert recipient.first_answered_at == first.created_at
    assert recipient.answered_at == third.created_at > second.created_at
    assert third.values == {"safety": "serious", "comment": "足を骨折"}


def test_answering_marks_every_delivery_answered(org, crisis, incident, hanako, push_service):
    subscribe(push_service, hanako)
    dispatch = send(incident, crisis, run=False)
    assert delivery_states(incident, hanako) == {"push": "queued", "email": "queued", "inapp": "sent"}
    answer(incident, hanako)
    assert delivery_states(incident, hanako) == {"push": "answered", "email": "answered", "inapp": "answered"}
    services.dispatch_run(dispatch_id=dispatch.id)  # someone who already answered is not woken up
    assert push_service.received == []
    assert delivery_states(incident, hanako) == {"push": "answered", "email": "answered", "inapp": "answered"}
    assert pushes_by_person(push_service) == {}


def test_answer_in_the_app_records_source_and_publishes_after_commit(
    asked, hanako, hanako_client, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(services, "publish_now", lambda group, kind, data: sent.append((group, kind, dict(data))))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = hanako_client.post(
            f"/acme/api/safety/mine/{asked.id}/",
            {"values": {"safety": "safe", "help": "no"}},
            content_type="application/json",
        )
    assert sent == []  # nothing before commit
    for callback in callbacks:
        callback()
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["answer"]["values"] == {"safety": "safe", "help": "no"} and body["answer"]["source"] == "app"
    assert body["first_answered_at"] is not None
    [(stream, _kind, data)] = [e for e in sent if e[1] == "safety.answered"]
    assert stream == f"user.{hanako.id}"
    assert data["incident_id"] == asked.id and data["status"] == "safe" and data["source"] == "app"


def test_my_requests_list_open_incidents_in_my_language(org, crisis, incident, tree):
    english = safety_person(org, "english", department=tree.east, language="en")
    client = signed_in(english)
    assert client.get("/acme/api/safety/mine/").json() == []
    send(incident, crisis)
    [request] = client.get("/acme/api/safety/mine/").json()
    assert request["url"] == f"/acme/safety/{incident.id}/" and request["incident"]["is_open"]
    assert request["questions"][0]["label"] == "Are you safe?"
    assert [c["label"] for c in request["questions"][0]["choices"]] == ["Safe", "Minor injury", "Serious injury"]
    services.incident_complete(incident=incident, actor=crisis)
    assert client.get("/acme/api/safety/mine/").json() == []


# --- proxy answers --------------------------------------------------------------------------------------------


def test_proxy_answer_records_who_entered_it_and_how(org, asked, hanako, tree):
    manager = factories.person(org, "sales-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales)
    client = signed_in(manager)
    url = f"/acme/api/safety/incidents/{asked.id}/people/{hanako.id}/answers/"
    response = client.post(
        url, {"values": {"safety": "minor", "help": "yes"}, "note": "電話で確認"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    saved = Answer.objects.get()
    assert saved.source == AnswerSource.PROXY and saved.entered_by == manager and saved.proxy_note == "電話で確認"
    assert Recipient.objects.get(person=hanako).needs_help
    history = client.get(url).json()
    assert history["person"]["id"] == hanako.id
    [shown] = history["answers"]
    assert shown["source"] == "proxy" and shown["entered_by"] == manager.display_name
    assert shown["proxy_note"] == "電話で確認"


def test_proxy_answer_outside_a_department_managers_subtree_is_refused(org, crisis, incident, tree):
    worker = safety_person(org, "plant-worker", department=tree.plant)
    homeless = safety_person(org, "homeless")
    send(incident, crisis)
    manager = factories.person(org, "sales-manager", roles=(Role.DEPARTMENT_MANAGER,), department=tree.sales)
    scope = {tree.sales.id, tree.east.id}
    for person in (worker, homeless):
        with pytest.raises(ApplicationError) as raised:
            services.proxy_answer_submit(
                incident=incident, actor=manager, person=person, values={"safety": "safe"}, note="電話", scope=scope
            )
        assert raised.value.code == "out_of_scope" and raised.value.status == 403
        response = signed_in(manager).post(
            f"/acme/api/safety/incidents/{incident.id}/people/{person.id}/answers/",
            {"values": {"safety": "safe"}, "note": "電話"},
            content_type="application/json",
        )
        assert response.status_code == 404  # outside the subtree the person does not exist for them
    assert not Answer.objects.exists()
    # a crisis manager may answer for anyone
    services.proxy_answer_submit(
        incident=incident, actor=crisis, person=worker, values={"safety": "safe"}, note="電話", scope=None
    )
    assert Answer.objects.get().entered_by == crisis


def test_proxy_answer_needs_to_say_how_the_person_was_reached(org, crisis, asked, hanako):
    with pytest.raises(ApplicationError) as raised:
        services.proxy_answer_submit(
            incident=asked, actor=crisis, person=hanako, values={"safety": "safe"}, note="  ", scope=None
        )
    assert raised.value.code == "bad_note" and not Answer.objects.exists()


# --- refused answers change nothing -----------------------------------------------------------------------------


def test_answer_after_completion_is_refused(org, crisis, asked, hanako, hanako_client):
    answer(asked, hanako, "safe")
    before = recipient_state(asked, hanako)
    services.incident_complete(incident=asked, actor=crisis)
    with pytest.raises(ApplicationError) as raised:
        answer(asked, hanako, "serious")
    assert raised.value.code == "incident_closed" and raised.value.status == 409
    response = hanako_client.post(
        f"/acme/api/safety/mine/{asked.id}/", {"values": {"safety": "minor"}}, content_type="application/json"
    )
    assert response.status_code == 409 and response.json()["code"] == "incident_closed"
    assert Answer.objects.count() == 1 and recipient_state(asked, hanako) == before


def test_a_person_not_asked_cannot_answer(org, crisis, incident, tree):
    safety_person(org, "asked", department=tree.east)
    send(incident, crisis, {"mode": "filter", "department_ids": [tree.east.id]})
    outsider = safety_person(org, "outsider", department=tree.plant)
    with pytest.raises(ApplicationError) as raised:
        answer(incident, outsider)
    assert raised.value.code == "not_asked" and raised.value.status == 403
    client = signed_in(outsider)
    response = client.post(
        f"/acme/api/safety/mine/{incident.id}/", {"values": {"safety": "safe"}}, content_type="application/json"
    )
    assert response.status_code == 404
    assert client.get(f"/acme/api/safety/mine/{incident.id}/").status_code == 404
    assert not Answer.objects.exists()


@pytest.mark.parametrize(
    "values",
    [
        {"safety": "fine"},  # not one of the choices
        {},  # the required safety question missing
        {"help": "yes", "comment": "助けて"},  # answers, but not the required one
        {"safety": ["safe"]},  # BUG: a list for a single choice was a TypeError (500)
        {"safety": {"safe": True}},
        {"safety": "safe", "work": "maybe"},
        "safe",
        ["safe"],
    ],
)
def test_an_invalid_answer_is_a_400_and_changes_nothing(asked, hanako, hanako_client, values):
    answer(asked, hanako, "safe")
    before = recipient_state(asked, hanako)
    deliveries = delivery_states(asked, hanako)
    hanako_client.raise_request_exception = False  # a server error shows as its status
    response = hanako_client.post(
        f"/acme/api/safety/mine/{asked.id}/", {"values": values}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "bad_answer", response.content
    assert Answer.objects.count() == 1
    assert recipient_state(asked, hanako) == before and delivery_states(asked, hanako) == deliveries


def test_an_invalid_first_answer_leaves_the_person_unanswered(asked, hanako):
    with pytest.raises(ApplicationError):
        answer(asked, hanako, "fine")
    assert recipient_state(asked, hanako) == ("", False, None, 0, None, None)
    assert set(delivery_states(asked, hanako).values()) == {"sent"}
    assert not Answer.objects.exists()


# --- location ------------------------------------------------------------------------------------------------


def test_location_is_stored_only_when_the_incident_collects_it(org, crisis, tree):
    person = safety_person(org, "located", department=tree.east)
    with_location = incident_make(org, crisis, collect_location=True)
    without = incident_make(org, crisis)
    for incident in (with_location, without):
        send(incident, crisis)
        services.answer_submit(
            incident_id=incident.id,
            person=person,
            values={"safety": "safe"},
            source="app",
            location={"latitude": 35.681236, "longitude": 139.767125, "accuracy": 12.5},
        )
    kept = Answer.objects.get(incident=with_location)
    assert (kept.latitude, kept.longitude, kept.accuracy) == (35.681236, 139.767125, 12.5)
    ignored = Answer.objects.get(incident=without)
    assert (ignored.latitude, ignored.longitude, ignored.accuracy) == (None, None, None)


@pytest.mark.parametrize(
    "location",
    [
        {"latitude": 90.5, "longitude": 139.7},
        {"latitude": -91, "longitude": 0},
        {"latitude": 35, "longitude": 180.01},
        {"latitude": 35, "longitude": -181},
        {"latitude": 35, "longitude": 139, "accuracy": -1},
        {"latitude": 35, "longitude": 139, "accuracy": 1e9},
        {"latitude": "north", "longitude": 139},
        {"latitude": 35},
        {"latitude": None, "longitude": 139},
    ],
)
def test_a_location_out_of_range_is_refused_and_changes_nothing(org, crisis, tree, location):
    person = safety_person(org, "located", department=tree.east)
    incident = incident_make(org, crisis, collect_location=True)
    send(incident, crisis)
    client = signed_in(person)
    response = client.post(
        f"/acme/api/safety/mine/{incident.id}/",
        {"values": {"safety": "safe"}, "location": location},
        content_type="application/json",
    )
    assert response.status_code == 400 and response.json()["code"] == "bad_location"
    assert not Answer.objects.exists()
    assert recipient_state(incident, person)[:4] == ("", False, None, 0)


def test_location_edges_are_accepted(org, crisis, tree):
    person = safety_person(org, "located", department=tree.east)
    incident = incident_make(org, crisis, collect_location=True)
    send(incident, crisis)
    services.answer_submit(
        incident_id=incident.id,
        person=person,
        values={"safety": "safe"},
        source="app",
        location={"latitude": -90, "longitude": 180},
    )
    saved = Answer.objects.get()
    assert (saved.latitude, saved.longitude, saved.accuracy) == (-90.0, 180.0, None)
    assert Delivery.objects.filter(person=person).exclude(state=DeliveryState.ANSWERED).count() == 0


@pytest.mark.parametrize("vendor", ["postgresql", "other"])
def test_both_write_paths_keep_history_and_refuse_an_incident_closed_meanwhile(
    asked, hanako, crisis, monkeypatch, vendor
):
    """On PostgreSQL the answer is one statement; elsewhere (the embedded SQLite) the ORM does the same writes.
    Both keep the first answer time, count, mark deliveries, and refuse an incident completed after the
    person's request was read (the lookup and the write are separate steps)."""
    if vendor == "other":
        monkeypatch.setattr(services, "_answer_write", services._answer_write_orm)
    first = answer(asked, hanako, "safe")
    second = answer(asked, hanako, "minor", help="yes")
    recipient = Recipient.objects.select_related("incident").get(incident=asked, person=hanako)
    assert (recipient.answer_id, recipient.answer_count, recipient.status) == (second.id, 2, "minor")
    assert recipient.first_answered_at == first.created_at and recipient.needs_help
    assert set(delivery_states(asked, hanako).values()) == {"answered"}
    services.incident_complete(incident=asked, actor=crisis)  # the request was read before this
    with pytest.raises(ApplicationError) as refused:
        services.answer_submit(
            incident_id=asked.id, person=hanako, values={"safety": "serious"}, source="app", recipient=recipient
        )
    assert refused.value.code == "incident_closed"
    assert Answer.objects.filter(incident=asked, person=hanako).count() == 2
