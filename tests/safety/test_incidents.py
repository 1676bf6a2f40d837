"""Registering an incident: the form's checks, the default and custom question forms, opening, changing and
completing it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from config.errors import ApplicationError
from directory.models import Role
from safety import selectors, services
from safety.models import AnswerStatus, Incident, IncidentStatus
from safety.questions import answer_clean, default_questions, questions_clean
from tests import factories
from tests.safety.conftest import answer, incident_make, safety_person, send

pytestmark = pytest.mark.django_db


def error_code(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ApplicationError) as raised:
        call(*args, **kwargs)
    return raised.value.code


# --- incident_create -------------------------------------------------------------------------------------


def test_new_incident_is_a_draft_with_the_default_question_form(org, crisis):
    incident = incident_make(org, crisis, title="  地震  ", message=" 回答してください ")
    assert incident.status == IncidentStatus.DRAFT and incident.created_by == crisis
    assert (incident.title, incident.message) == ("地震", "回答してください")
    assert [q["key"] for q in incident.questions] == ["safety", "help", "work", "home", "comment"]
    assert incident.questions == default_questions()
    safety = incident.questions[0]
    assert safety["required"] and [c["label"] for c in safety["choices"]] == ["無事", "軽傷", "重傷"]
    assert [c["label"] for c in incident.questions[1]["choices"]] == ["はい", "いいえ"]
    assert [c["label"] for c in incident.questions[2]["choices"]] == ["可", "不可"]
    assert [c["label"] for c in incident.questions[3]["choices"]] == ["被害なし", "一部損壊", "全壊"]
    assert incident.questions[4]["kind"] == "text"


@pytest.mark.parametrize(("title", "ok"), [("", False), ("   ", False), ("x" * 201, False), ("x" * 200, True)])
def test_title_is_required_and_at_most_200_characters(org, crisis, title, ok):
    if ok:
        assert incident_make(org, crisis, title=title).title == title
    else:
        assert error_code(incident_make, org, crisis, title=title) == "bad_title"
        assert not Incident.objects.exists()


@pytest.mark.parametrize(("message", "ok"), [("", False), ("\n \n", False), ("m" * 5001, False), ("m" * 5000, True)])
def test_message_is_required_and_at_most_5000_characters(org, crisis, message, ok):
    if ok:
        assert incident_make(org, crisis, message=message).message == message
    else:
        assert error_code(incident_make, org, crisis, message=message) == "bad_message"
        assert not Incident.objects.exists()


def test_end_notice_needs_an_address(org, crisis):
    later = timezone.now() + timedelta(hours=6)
    assert error_code(incident_make, org, crisis, end_notice_at=later) == "bad_address"
    assert error_code(incident_make, org, crisis, end_notice_at=later, end_notice_addresses=[" ", ""]) == "bad_address"
    assert not Incident.objects.exists()


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(minutes=-1)])
def test_end_notice_must_come_after_the_tally_start(org, crisis, offset):
    start = timezone.now() + timedelta(hours=1)
    code = error_code(
        incident_make,
        org,
        crisis,
        tally_start_at=start,
        end_notice_at=start + offset,
        end_notice_addresses=["soumu@acme.example"],
    )
    assert code == "bad_end_notice" and not Incident.objects.exists()


def test_end_notice_addresses_are_checked_and_duplicates_dropped(org, crisis):
    later = timezone.now() + timedelta(hours=1)
    assert (
        error_code(
            incident_make, org, crisis, end_notice_at=later, end_notice_addresses=["soumu@acme", "not an address"]
        )
        == "bad_address"
    )
    incident = incident_make(
        org,
        crisis,
        end_notice_at=later,
        end_notice_addresses=["Soumu@acme.example", "soumu@acme.example ", "", "boss@acme.example"],
    )
    assert incident.end_notice_addresses == ["Soumu@acme.example", "boss@acme.example"]


def test_people_to_notify_must_be_active_people_of_this_organisation(org, other_org, crisis):
    outsider = factories.person(other_org, "outsider", roles=(Role.CRISIS_MANAGER,))
    gone = factories.person(org, "gone", roles=(Role.ADMIN_ANPI,))
    gone.is_active = False
    gone.save()
    assert error_code(incident_make, org, crisis, notify_user_ids=[crisis.id, outsider.id]) == "bad_notify"
    assert error_code(incident_make, org, crisis, notify_user_ids=[gone.id]) == "bad_notify"
    assert error_code(incident_make, org, crisis, notify_user_ids=[10**9]) == "bad_notify"
    assert not Incident.objects.exists()
    assert incident_make(org, crisis, notify_user_ids=[crisis.id, crisis.id]).notify_user_ids == [crisis.id]


# --- the question form ------------------------------------------------------------------------------------


def test_custom_single_multiple_and_text_questions_are_kept():
    cleaned = questions_clean(
        [
            {"key": "safety"},
            {
                "key": "shelter",
                "kind": "single",
                "label": "避難場所",
                "label_en": "Shelter",
                "required": True,
                "choices": [{"key": "home", "label": "自宅"}, {"key": "school", "label": "学校", "label_en": "School"}],
            },
            {"kind": "multiple", "label": "不足しているもの", "choices": ["水", "食料", "薬"]},
            {"key": "note", "kind": "text", "label": "連絡事項"},
        ]
    )
    assert [q["key"] for q in cleaned] == ["safety", "shelter", "q3", "note"]
    assert [q["kind"] for q in cleaned] == ["single", "single", "multiple", "text"]
    assert cleaned[1]["required"] and cleaned[1]["label_en"] == "Shelter"
    assert cleaned[1]["choices"][1] == {"key": "school", "label": "学校", "label_en": "School"}
    assert [c["key"] for c in cleaned[2]["choices"]] == ["c1", "c2", "c3"] and not cleaned[2]["required"]
    assert cleaned[3]["choices"] == []
    # and answers are checked against that form
    clean = answer_clean(cleaned, {"safety": "minor", "shelter": "school", "q3": ["c3", "c1", "c3"], "x": 1})
    assert clean.values == {"safety": "minor", "shelter": "school", "q3": ["c1", "c3"]}
    assert clean.status == "minor" and not clean.needs_help


@pytest.mark.parametrize(
    "raw",
    [
        "not a list",
        {"key": "safety"},
        ["not a question"],
        [{"key": "Bad Key", "kind": "text", "label": "x"}],
        [{"key": "a", "kind": "text", "label": "x"}, {"key": "a", "kind": "text", "label": "y"}],
        [{"key": "a", "kind": "dropdown", "label": "x", "choices": ["1", "2"]}],
        [{"key": "a", "kind": "text", "label": "   "}],
        [{"key": "a", "kind": "single", "label": "x", "choices": ["only one"]}],
        [{"key": "a", "kind": "single", "label": "x", "choices": "ab"}],
        [{"key": "a", "kind": "multiple", "label": "x", "choices": ["1", " "]}],
        [
            {
                "key": "a",
                "kind": "single",
                "label": "x",
                "choices": [{"key": "k", "label": "1"}, {"key": "k", "label": "2"}],
            }
        ],
        [{"key": "a", "kind": "single", "label": "x", "choices": [str(n) for n in range(21)]}],
        [{"kind": "text", "label": f"q{n}"} for n in range(21)],
    ],
)
def test_bad_question_forms_are_refused_with_bad_questions(org, crisis, raw):
    assert error_code(questions_clean, raw) == "bad_questions"
    assert error_code(incident_make, org, crisis, questions=raw) == "bad_questions"
    assert not Incident.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        {"safety": ["safe"]},
        {"safety": {"safe": 1}},
        {"safety": "safe", "needs": [["water"]]},
        {"safety": "safe", "needs": [{"water": 1}]},
        {"safety": "safe", "needs": "water"},
        {"safety": "safe", "needs": ["water", "gold"]},
    ],
)
def test_answers_that_are_not_choice_keys_are_bad_answers_not_crashes(raw):
    """BUG: answer_clean tested `value in keys` on unhashable values (a list or an object) and raised TypeError."""
    form = questions_clean(
        [
            {"key": "safety"},
            {"key": "needs", "kind": "multiple", "label": "不足", "choices": [{"key": "water", "label": "水"}, "食料"]},
        ]
    )
    assert error_code(answer_clean, form, raw) == "bad_answer"


def test_safety_and_help_keep_their_fixed_choices():
    cleaned = questions_clean(
        [
            {"key": "safety", "kind": "text", "label": "元気?", "choices": [{"key": "fine", "label": "元気"}]},
            {"key": "help", "kind": "multiple", "label": "?", "required": True, "choices": ["a", "b"]},
        ]
    )
    defaults = {q["key"]: q for q in default_questions()}
    assert cleaned[0] == defaults["safety"]
    assert cleaned[1]["choices"] == defaults["help"]["choices"] and cleaned[1]["kind"] == "single"
    assert cleaned[1]["required"]  # only whether it is required may change
    assert error_code(answer_clean, cleaned, {"safety": "fine", "help": "yes"}) == "bad_answer"


def test_a_form_without_questions_is_answered_and_tallied_as_answered(org, crisis):
    incident = incident_make(org, crisis, questions=[])
    assert incident.questions == []
    person = safety_person(org, "hanako")
    send(incident, crisis)
    services.answer_submit(incident_id=incident.id, person=person, values={}, source="app")
    overall = selectors.tally_total(selectors.tally_by_department(incident=incident))
    assert overall.counts == {"safe": 0, "minor": 0, "serious": 0, "answered": 1, "none": 0}
    assert overall.answered == 1 and overall.rate == 1.0
    assert incident.recipients.get().status == AnswerStatus.ANSWERED


def test_incident_api_registers_with_default_or_no_questions(org, crisis, crisis_client):
    start = timezone.now().isoformat()
    body = {"title": "地震", "message": "回答してください", "tally_start_at": start}
    created = crisis_client.post("/acme/api/safety/incidents/", body, content_type="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["status"] == "draft" and len(created.json()["questions"]) == 5
    bare = crisis_client.post("/acme/api/safety/incidents/", {**body, "questions": []}, content_type="application/json")
    assert bare.status_code == 201 and bare.json()["questions"] == []
    missing = crisis_client.post(
        "/acme/api/safety/incidents/", {"title": "t", "message": "m"}, content_type="application/json"
    )
    assert missing.status_code == 400 and "tally_start_at" in missing.json()["fields"]
    blank = crisis_client.post("/acme/api/safety/incidents/", {**body, "title": "   "}, content_type="application/json")
    assert blank.status_code == 400
    bad = crisis_client.post(
        "/acme/api/safety/incidents/",
        {**body, "questions": [{"key": "x", "kind": "single", "label": "x", "choices": ["1"]}]},
        content_type="application/json",
    )
    assert bad.status_code == 400 and bad.json()["code"] == "bad_questions"
    assert Incident.objects.count() == 2


# --- opening, changing, completing -----------------------------------------------------------------------


def test_open_moves_a_draft_to_accepting_once(org, crisis, incident):
    opened = services.incident_open(incident=incident, actor=crisis)
    assert opened.status == IncidentStatus.ACCEPTING and opened.opened_at is not None
    assert error_code(services.incident_open, incident=incident, actor=crisis) == "not_draft"


def test_questions_cannot_change_after_someone_answered(org, crisis, incident):
    person = safety_person(org, "hanako")
    send(incident, crisis)
    services.incident_update(incident=incident, actor=crisis, title="続報")  # before answers: fine
    answer(incident, person)
    with pytest.raises(ApplicationError) as raised:
        services.incident_update(incident=incident, actor=crisis, questions=[{"key": "safety"}])
    assert raised.value.code == "questions_locked" and raised.value.status == 409
    incident.refresh_from_db()
    assert incident.title == "続報" and len(incident.questions) == 5


def test_a_completed_incident_cannot_change(org, crisis, incident):
    services.incident_complete(incident=incident, actor=crisis)
    again = services.incident_complete(incident=incident, actor=crisis)  # completing twice is harmless
    assert again.status == IncidentStatus.COMPLETED and again.completed_by == crisis
    assert error_code(services.incident_update, incident=incident, actor=crisis, title="x") == "incident_completed"
