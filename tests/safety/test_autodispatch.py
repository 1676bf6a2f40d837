"""Automatic dispatch end to end: real JMA documents stored through the ingest (or the REST push endpoint) are
decided per organisation after commit, and the safety checks they open reach the local push service and the SMTP
server in each person's language, exactly once.

The real parts are PostgreSQL, Redis (the channel layer the events go through), the local push service (which
verifies VAPID and decrypts what it receives) and aiosmtpd. Celery runs eagerly as the test settings configure it,
so the after-commit callbacks (deciding, sending) run here when `django_capture_on_commit_callbacks` fires them.
Cancellations (取消) are built from the real reports the way JMA writes them (FORMAT_NOTES §3): the same head with
InfoType 取消 and a Body that is only a Text."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.utils import timezone

from directory.models import Organization, User
from directory.services import organization_create
from safety import autodispatch
from safety.autodispatch import decision_execute, decisions_due, documents_undecided, jma_document_decide
from safety.jma.ingest import jma_document_ingest
from safety.models import (
    Delivery,
    DeliveryState,
    Dispatch,
    DispatchRule,
    Incident,
    IncidentStatus,
    JmaDecision,
    JmaDocument,
    Recipient,
)
from safety.tasks import safety_scan
from tests.pushservice import LocalPushService
from tests.safety.conftest import pushes_by_person, safety_person, subscribe
from tests.services import shared_fixtures

pytestmark = pytest.mark.django_db

TOHOKU_VXSE51 = "earthquake/tohoku2011_vxse51_max6plus_6prefs__32-39_11_01_120615_VXSE51.xml"
TOHOKU_VXSE53 = "earthquake/tohoku2011_vxse53_MAXINT7_41prefs__32-39_11_05_240613_VXSE53.xml"
NOTO_VXSE51 = "earthquake/REAL_2024-01-01_noto_vxse51_max6plus_31prefs__IntensityReportL.xml"
NANKAI_DRILL_TSUNAMI = "tsunami/TRAINING_nankai2016_vtse41_MAJOR_29areas__32-39_12_02_250206_VTSE41.xml"
EEW_TEST = "eew/TEST_vxse42_eew_delivery_test__54_01_01_100514_VXSE42.xml"
NARA_ISSUED = "weather/nara2011_vpww53_SPECIAL_heavyrain_issued__15_08_01_130412_VPWW53.xml"
NARA_CONTINUED = "weather/nara2011_vpww53_SPECIAL_continued_and_new__15_08_02_130412_VPWW53.xml"
NARA_LIFTED = "weather/nara2011_vpww53_SPECIAL_lifted__15_08_05_130412_VPWW53.xml"
TOKEN = "s3cret-jma-token"

# Tohoku 2011: the VXSE51 has 宮城 6+, 岩手 6-, 福島 5+, 山形 5-; the VXSE53 adds 東京 5+ (and more). 大阪 stays
# under 5強 in both.
MIYAGI, IWATE, FUKUSHIMA, TOKYO, OSAKA, ISHIKAWA, NARA = "04", "03", "07", "13", "27", "17", "29"


def raw(name: str) -> bytes:
    return (shared_fixtures("jma") / name).read_bytes()


def cancellation(name: str, *, at: str) -> bytes:
    """The 取消 of a real report: its head with InfoType 取消 and a later ReportDateTime, and a Body that is
    only a Text, as JMA sends it (FORMAT_NOTES §3)."""
    data = raw(name).decode()
    data = data.replace("<InfoType>発表</InfoType>", "<InfoType>取消</InfoType>", 1)
    data = re.sub(r"<ReportDateTime>[^<]*</ReportDateTime>", f"<ReportDateTime>{at}</ReportDateTime>", data, count=1)
    data = re.sub(
        r"<Headline>.*?</Headline>", "<Headline><Text>情報を取り消します。</Text></Headline>", data, flags=re.S
    )
    data = re.sub(
        r"(<Body[^>]*>).*?(</Body>)", r"\1<Text>先ほどの、情報を取り消します。</Text>\2", data, count=1, flags=re.S
    )
    assert "<InfoType>取消</InfoType>" in data and "<Intensity>" not in data
    return data.encode()


def with_status(name: str, status: str) -> bytes:
    """The same report as a drill (訓練) or a technical test (試験)."""
    data = raw(name).decode()
    assert "<Status>通常</Status>" in data
    return data.replace("<Status>通常</Status>", f"<Status>{status}</Status>", 1).encode()


def reissued(name: str, *, at: str, control_at: str) -> bytes:
    """The same report issued again later (a new ReportDateTime and Control/DateTime)."""
    data = raw(name).decode()
    data = re.sub(r"<ReportDateTime>[^<]*</ReportDateTime>", f"<ReportDateTime>{at}</ReportDateTime>", data, count=1)
    data = re.sub(r"<TargetDateTime>[^<]*</TargetDateTime>", f"<TargetDateTime>{at}</TargetDateTime>", data, count=1)
    return re.sub(r"<DateTime>[^<]*</DateTime>", f"<DateTime>{control_at}</DateTime>", data, count=1).encode()


@pytest.fixture
def ingest(django_capture_on_commit_callbacks: Any) -> Callable[..., JmaDocument]:
    """Store a document as the poller would and run what its commit sets off (deciding, sending), eagerly."""

    def run(data: bytes, url: str) -> JmaDocument:
        with django_capture_on_commit_callbacks(execute=True):
            return jma_document_ingest(url=url, raw=data, source="pull")

    return run


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Run a callable and then what its commit sets off."""

    def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return function(*args, **kwargs)

    return run


def rule(org: Organization, **fields: Any) -> DispatchRule:
    fields = {"name": "震度5強以上", "hazard": "earthquake", "min_intensity": "5+", **fields}
    return autodispatch.rule_create(organization=org, actor=None, **fields)


class People:
    """Safety users by where they are based; all but `unsubscribed` have a browser at the local push service."""

    def __init__(self, org: Organization, push_service: LocalPushService) -> None:
        self.miyagi = safety_person(org, "miyagi", region_code=MIYAGI, language="ja")
        self.fukushima = safety_person(org, "fukushima", region_code=FUKUSHIMA, language="en")
        self.tokyo = safety_person(org, "tokyo", region_code=TOKYO, language="en")
        self.osaka = safety_person(org, "osaka", region_code=OSAKA)
        self.no_anpi = safety_person(org, "no-anpi", region_code=MIYAGI, anpi=False)
        self.left = safety_person(org, "left", region_code=MIYAGI)
        self.left.is_active = False
        self.left.save(update_fields=["is_active"])
        for person in (self.miyagi, self.fukushima, self.tokyo, self.osaka, self.no_anpi, self.left):
            subscribe(push_service, person)


@pytest.fixture
def people(org: Organization, push_service: LocalPushService) -> People:
    return People(org, push_service)


def push_titles(service: LocalPushService) -> dict[int, list[str]]:
    return {person: [p["title"] for p in pushes] for person, pushes in pushes_by_person(service).items()}


def mail_subjects(smtp: Any) -> dict[str, list[str]]:
    subjects: dict[str, list[str]] = {}
    for message in smtp.messages:
        for address in message.envelope_to:
            subjects.setdefault(address, []).append(str(message["Subject"]).strip())
    return subjects


def deliveries(incident: Incident) -> list[tuple[int, str]]:
    return sorted(Delivery.objects.filter(incident=incident).values_list("person_id", "channel"))


def asked(incident: Incident) -> set[int]:
    return set(Recipient.objects.filter(incident=incident).values_list("person_id", flat=True))


# --- a report over the threshold -------------------------------------------------------------------------------


def test_a_report_over_the_threshold_opens_an_incident_sent_in_each_persons_language(
    org, other_org, people, push_service, smtp_server, ingest
):
    rule(org)
    safety_person(other_org, "foreign", region_code=MIYAGI)  # other_org has no rule: nothing for them

    document = ingest(raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")

    mine = JmaDecision.objects.get(organization=org, document=document)
    assert (mine.decision, mine.reason_code, mine.hazard, mine.drill) == ("dispatch", "dispatch", "earthquake", False)
    assert mine.new_person_ids == [people.miyagi.id, people.fukushima.id]
    assert "震度6強" in mine.reason and mine.executed_at is not None
    theirs = JmaDecision.objects.get(organization=other_org, document=document)
    assert (theirs.decision, theirs.reason_code) == ("ignore", "no_rule")
    assert theirs.reason.startswith("no rule")
    document.refresh_from_db()
    assert document.evaluated_at is not None

    incident = Incident.objects.get(organization=org)
    assert not Incident.objects.filter(organization=other_org).exists()
    assert incident.jma_event.startswith("earthquake|通常|20110311144640@")
    assert incident.titles["ja"].startswith("災害発生：地震（震度6強） ")
    assert "宮城県" in incident.titles["ja"] and "福島県" in incident.titles["ja"]
    assert incident.titles["en"].startswith("Disaster occurred: Earthquake (seismic intensity 6 Upper) — ")
    assert "Miyagi" in incident.titles["en"]
    assert incident.title == incident.titles["ja"] and not incident.is_drill
    assert incident.status == IncidentStatus.ACCEPTING and incident.opened_at is not None
    assert mine.incident_ids == [incident.id]
    assert asked(incident) == {people.miyagi.id, people.fukushima.id}

    # Decrypted by the push service: each title in the person's language, once.
    assert push_titles(push_service) == {
        people.miyagi.id: [incident.titles["ja"]],
        people.fukushima.id: [incident.titles["en"]],
    }
    bodies = {person: pushes[0]["body"] for person, pushes in pushes_by_person(push_service).items()}
    assert bodies[people.fukushima.id].startswith("JMA reports strong shaking")
    assert bodies[people.miyagi.id].startswith("気象庁の発表により")
    assert mail_subjects(smtp_server) == {
        people.miyagi.email: [incident.titles["ja"]],
        people.fukushima.email: [incident.titles["en"]],
    }
    assert set(Delivery.objects.filter(incident=incident).values_list("state", flat=True)) == {DeliveryState.SENT}
    assert len(deliveries(incident)) == 6  # push, e-mail and in-app for each of the two


def test_a_document_pushed_to_the_rest_endpoint_is_decided_and_sent(
    org, people, push_service, smtp_server, client, settings, django_capture_on_commit_callbacks
):
    settings.JMA_INGEST_TOKEN = TOKEN
    rule(org)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/jma/documents/?url=https://jma.example/tohoku-vxse51.xml",
            data=raw(TOHOKU_VXSE51),
            content_type="application/xml",
            HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        )
    assert response.status_code == 201, response.content
    incident = Incident.objects.get(organization=org)
    assert asked(incident) == {people.miyagi.id, people.fukushima.id}
    assert sorted(push_titles(push_service)) == sorted([people.miyagi.id, people.fukushima.id])

    # The same document again: 200, nothing decided or sent again.
    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(
            "/api/jma/documents/?url=https://jma.example/tohoku-vxse51.xml",
            data=raw(TOHOKU_VXSE51),
            content_type="application/xml",
            HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        )
    assert again.status_code == 200
    assert JmaDecision.objects.count() == 1 and Dispatch.objects.count() == 1
    assert len(push_service.received) == 2 and len(smtp_server.messages) == 2


# --- exactly once ------------------------------------------------------------------------------------------------


def test_deciding_or_executing_again_sends_nothing_twice(org, people, push_service, smtp_server, ingest, after_commit):
    rule(org)
    document = ingest(raw(TOHOKU_VXSE51), "https://jma.example/a.xml")
    decision = JmaDecision.objects.get(organization=org)
    incident = Incident.objects.get()
    before = (len(push_service.received), len(smtp_server.messages), deliveries(incident))

    assert after_commit(jma_document_decide, document_id=document.id) == []
    assert after_commit(decision_execute, decision_id=decision.id) == [incident.id]
    again = ingest(raw(TOHOKU_VXSE51), "https://jma.example/a.xml")  # the same URL: the stored row
    assert again.id == document.id
    # The same bytes under another URL (pushed in as well as polled): decided, as a duplicate.
    twin = ingest(raw(TOHOKU_VXSE51), "push:tohoku-vxse51")
    assert JmaDecision.objects.get(document=twin).reason_code == "duplicate"
    safety_scan()

    assert JmaDecision.objects.filter(document=document).count() == 1
    assert Incident.objects.count() == 1 and Dispatch.objects.count() == 1
    assert (len(push_service.received), len(smtp_server.messages), deliveries(incident)) == before
    assert len(before[2]) == len(set(before[2])) == 6


def test_a_later_report_of_the_same_quake_reaches_only_the_newly_hit_in_the_same_incident(
    org, people, push_service, smtp_server, ingest
):
    rule(org)
    ishikawa = safety_person(org, "ishikawa", region_code=ISHIKAWA)
    subscribe(push_service, ishikawa)
    ingest(raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")
    first = Incident.objects.get()

    document = ingest(raw(TOHOKU_VXSE53), "https://jma.example/tohoku-vxse53.xml")

    decision = JmaDecision.objects.get(document=document)
    assert (decision.decision, decision.new_person_ids) == ("update", [people.tokyo.id])
    assert Incident.objects.count() == 1 and decision.incident_ids == [first.id]
    assert list(Dispatch.objects.filter(incident=first).values_list("number", "recipients")) == [(1, 2), (2, 1)]
    assert asked(first) == {people.miyagi.id, people.fukushima.id, people.tokyo.id}
    assert {p: len(t) for p, t in push_titles(push_service).items()} == {
        people.miyagi.id: 1,
        people.fukushima.id: 1,
        people.tokyo.id: 1,
    }
    assert push_titles(push_service)[people.tokyo.id] == [first.titles["en"]]
    assert sorted(mail_subjects(smtp_server)) == sorted(
        [people.miyagi.email, people.fukushima.email, people.tokyo.email]
    )

    # Another quake (another EventID): another incident.
    ingest(raw(NOTO_VXSE51), "https://jma.example/noto-vxse51.xml")
    second = Incident.objects.exclude(id=first.id).get()
    assert second.jma_event.startswith("earthquake|通常|20240101161010@")
    assert asked(second) == {ishikawa.id}
    assert "石川県" in second.titles["ja"]


# --- the hold delay ----------------------------------------------------------------------------------------------


def test_a_held_decision_is_sent_once_by_the_scan_when_its_hold_is_over(
    org, people, push_service, smtp_server, ingest, after_commit
):
    rule(org, hold_minutes=10)
    ingest(raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")

    decision = JmaDecision.objects.get()
    assert decision.decision == "dispatch" and decision.executed_at is None
    assert timedelta(minutes=9) < decision.due_at - timezone.now() <= timedelta(minutes=10)
    assert not Incident.objects.exists() and not push_service.received and not smtp_server.messages
    assert decisions_due() == []
    assert decisions_due(now=timezone.now() + timedelta(minutes=11)) == [decision.id]
    after_commit(safety_scan)
    assert not Incident.objects.exists()

    JmaDecision.objects.filter(id=decision.id).update(due_at=timezone.now() - timedelta(seconds=1))
    result = after_commit(safety_scan)
    assert result["jma_executed"] == 1
    incident = Incident.objects.get()
    assert asked(incident) == {people.miyagi.id, people.fukushima.id}
    assert len(push_service.received) == 2 and len(smtp_server.messages) == 2

    assert after_commit(safety_scan)["jma_executed"] == 0
    assert len(push_service.received) == 2 and len(smtp_server.messages) == 2 and Dispatch.objects.count() == 1


def test_a_cancellation_during_the_hold_sends_nothing_to_the_people_it_withdraws(
    org, people, push_service, smtp_server, ingest, after_commit
):
    rule(org, hold_minutes=10)
    ingest(raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")
    later = ingest(raw(TOHOKU_VXSE53), "https://jma.example/tohoku-vxse53.xml")
    assert JmaDecision.objects.get(document=later).new_person_ids == [people.tokyo.id]

    cancel = ingest(cancellation(TOHOKU_VXSE53, at="2011-03-11T15:10:00+09:00"), "https://jma.example/cancel.xml")

    withdrawn = JmaDecision.objects.get(document=cancel)
    assert (withdrawn.decision, withdrawn.withdrawn_person_ids) == ("withdraw", [people.tokyo.id])
    assert withdrawn.executed_at is not None
    pending = JmaDecision.objects.get(document=later)
    assert pending.executed_at is None and pending.new_person_ids == []
    assert not push_service.received and not smtp_server.messages

    JmaDecision.objects.filter(executed_at__isnull=True).update(due_at=timezone.now() - timedelta(seconds=1))
    after_commit(safety_scan)
    incident = Incident.objects.get()
    assert asked(incident) == {people.miyagi.id, people.fukushima.id}
    assert people.tokyo.id not in pushes_by_person(push_service)
    assert people.tokyo.email not in mail_subjects(smtp_server)
    assert Dispatch.objects.count() == 1


# --- 取消 after sending ------------------------------------------------------------------------------------------


def test_a_cancellation_withdraws_only_the_people_the_cancelled_report_reached_and_tells_them(
    org, people, push_service, smtp_server, ingest
):
    rule(org)
    ingest(raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")
    ingest(raw(TOHOKU_VXSE53), "https://jma.example/tohoku-vxse53.xml")
    incident = Incident.objects.get()
    assert asked(incident) == {people.miyagi.id, people.fukushima.id, people.tokyo.id}
    push_service.received.clear()
    smtp_server.messages.clear()

    # The VXSE53 is withdrawn: 東京 was asked only because of it; 宮城 and 福島 were hit by the VXSE51 too.
    ingest(cancellation(TOHOKU_VXSE53, at="2011-03-11T15:10:00+09:00"), "https://jma.example/cancel-53.xml")

    assert asked(incident) == {people.miyagi.id, people.fukushima.id}
    assert not Delivery.objects.filter(incident=incident, person=people.tokyo).exists()
    assert push_titles(push_service) == {people.tokyo.id: [f"[Withdrawn] {incident.titles['en']}"]}
    notice = pushes_by_person(push_service)[people.tokyo.id][0]
    assert notice["body"].startswith("JMA withdrew the report")
    assert mail_subjects(smtp_server) == {people.tokyo.email: [f"[Withdrawn] {incident.titles['en']}"]}
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.ACCEPTING

    # The VXSE51 is withdrawn too: nobody is left, each is told in their language, the incident completes.
    push_service.received.clear()
    smtp_server.messages.clear()
    ingest(cancellation(TOHOKU_VXSE51, at="2011-03-11T15:11:00+09:00"), "https://jma.example/cancel-51.xml")

    assert asked(incident) == set() and not Delivery.objects.filter(incident=incident).exists()
    assert push_titles(push_service) == {
        people.miyagi.id: [f"【取消】{incident.titles['ja']}"],
        people.fukushima.id: [f"[Withdrawn] {incident.titles['en']}"],
    }
    assert mail_subjects(smtp_server) == {
        people.miyagi.email: [f"【取消】{incident.titles['ja']}"],
        people.fukushima.email: [f"[Withdrawn] {incident.titles['en']}"],
    }
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.COMPLETED


# --- drills and tests --------------------------------------------------------------------------------------------


def test_a_drill_message_does_nothing_while_drill_mode_is_off(org, people, push_service, ingest):
    rule(org)
    document = ingest(with_status(TOHOKU_VXSE51, "訓練"), "https://jma.example/drill.xml")
    decision = JmaDecision.objects.get(document=document)
    assert (decision.decision, decision.reason_code, decision.drill) == ("ignore", "drill", True)
    assert decision.due_at is None
    assert not Incident.objects.exists() and not push_service.received


def test_with_drill_mode_on_a_drill_is_its_own_marked_incident_never_merged_with_the_real_one(
    org, people, push_service, smtp_server, ingest
):
    rule(org)
    autodispatch.drill_mode_set(organization=org, actor=None, drill_mode=True)

    ingest(with_status(TOHOKU_VXSE51, "訓練"), "https://jma.example/drill.xml")
    drill = Incident.objects.get()
    assert drill.is_drill and drill.jma_event.startswith("earthquake|訓練|20110311144640@")
    assert drill.titles["ja"].startswith("【訓練】災害発生：")
    assert drill.titles["en"].startswith("[DRILL] Disaster occurred:")
    assert push_titles(push_service) == {
        people.miyagi.id: [drill.titles["ja"]],
        people.fukushima.id: [drill.titles["en"]],
    }
    assert mail_subjects(smtp_server)[people.fukushima.email] == [drill.titles["en"]]

    # The real report of the same EventID: a separate, real incident reaching the same people again.
    ingest(raw(TOHOKU_VXSE51), "https://jma.example/real.xml")
    real = Incident.objects.exclude(id=drill.id).get()
    assert not real.is_drill and real.jma_event.startswith("earthquake|通常|20110311144640@")
    assert not real.titles["ja"].startswith("【訓練】")
    assert asked(real) == asked(drill) == {people.miyagi.id, people.fukushima.id}


def test_the_nankai_drill_tsunami_opens_a_drill_incident_only_in_drill_mode(org, push_service, ingest):
    rule(org, name="津波警報以上", hazard="tsunami", tsunami_level="warning")
    coast = safety_person(org, "wakayama", region_code="30")
    subscribe(push_service, coast)
    ingest(raw(NANKAI_DRILL_TSUNAMI), "https://jma.example/nankai-off.xml")
    assert not Incident.objects.exists()

    autodispatch.drill_mode_set(organization=org, actor=None, drill_mode=True)
    ingest(raw(NANKAI_DRILL_TSUNAMI), "https://jma.example/nankai-on.xml")  # the drill sent again, another URL
    incident = Incident.objects.get()
    assert incident.is_drill and incident.jma_event.startswith("tsunami|訓練|")
    assert incident.titles["ja"].startswith("【訓練】災害発生：大津波警報 ")
    assert incident.titles["en"].startswith("[DRILL] Disaster occurred: Major tsunami warning — ")
    assert push_titles(push_service) == {coast.id: [incident.titles["ja"]]}


def test_a_test_message_never_creates_anything(org, people, push_service, smtp_server, ingest):
    rule(org)
    autodispatch.drill_mode_set(organization=org, actor=None, drill_mode=True)
    for name, data in (("test-quake", with_status(TOHOKU_VXSE51, "試験")), ("eew-test", raw(EEW_TEST))):
        document = ingest(data, f"https://jma.example/{name}.xml")
        decision = JmaDecision.objects.get(document=document)
        assert (decision.decision, decision.reason_code, decision.due_at) == ("ignore", "test", None)
    assert not Incident.objects.exists() and not push_service.received and not smtp_server.messages


# --- crash safety ------------------------------------------------------------------------------------------------


def test_the_scan_decides_a_document_a_crash_left_undecided(org, people, push_service, after_commit):
    rule(org)
    data = raw(TOHOKU_VXSE51)
    # Stored, but the process died before its commit hook ran: no decision, evaluated_at NULL.
    document = JmaDocument.objects.create(
        url="https://jma.example/lost.xml",
        source="pull",
        raw=data,
        sha256=hashlib.sha256(data).hexdigest(),
        title="震度速報",
        status="通常",
        info_type="発表",
        kind="earthquake",
        type_code="VXSE51",
    )
    assert documents_undecided() == [document.id]

    result = after_commit(safety_scan)

    assert result["jma_decided"] == 1
    document.refresh_from_db()
    assert document.evaluated_at is not None and documents_undecided() == []
    incident = Incident.objects.get()
    assert asked(incident) == {people.miyagi.id, people.fukushima.id}
    assert len(push_service.received) == 2
    assert after_commit(safety_scan)["jma_decided"] == 0
    assert len(push_service.received) == 2


def test_the_scan_executes_a_due_decision_a_crash_left_unexecuted(org, people, push_service, after_commit):
    rule(org)
    document = JmaDocument.objects.get(
        id=jma_document_ingest(url="https://jma.example/x.xml", raw=raw(TOHOKU_VXSE51), source="pull").id
    )
    # Decided, but the process died before executing it.
    (decision,) = jma_document_decide(document_id=document.id, execute=False)
    assert decision.executed_at is None and decision.due_at <= timezone.now()
    assert decisions_due() == [decision.id]

    result = after_commit(safety_scan)

    assert result["jma_executed"] == 1
    decision.refresh_from_db()
    assert decision.executed_at is not None and decision.incident_ids == [Incident.objects.get().id]
    assert len(push_service.received) == 2
    assert after_commit(safety_scan)["jma_executed"] == 0 and len(push_service.received) == 2


def test_one_organisations_failure_neither_stops_the_others_nor_loses_the_document(
    org, other_org, people, push_service, after_commit, ingest, monkeypatch
):
    rule(org)
    rule(other_org)
    theirs = safety_person(other_org, "theirs", region_code=MIYAGI)
    subscribe(push_service, theirs)
    real_decide = autodispatch.decide  # type: ignore[attr-defined]  # the name the service calls

    def failing_for_org(report: Any, **kwargs: Any) -> Any:
        if any(p.id == people.miyagi.id for p in kwargs["people"]):
            raise RuntimeError("boom")
        return real_decide(report, **kwargs)

    monkeypatch.setattr(autodispatch, "decide", failing_for_org)
    document = ingest(raw(TOHOKU_VXSE51), "https://jma.example/a.xml")

    assert list(JmaDecision.objects.values_list("organization_id", flat=True)) == [other_org.id]
    assert pushes_by_person(push_service).keys() == {theirs.id}
    document.refresh_from_db()
    assert document.evaluated_at is None  # the scan tries again

    monkeypatch.setattr(autodispatch, "decide", real_decide)
    after_commit(safety_scan)
    assert JmaDecision.objects.filter(document=document).count() == 2
    assert pushes_by_person(push_service).keys() == {theirs.id, people.miyagi.id, people.fukushima.id}
    assert all(len(p) == 1 for p in pushes_by_person(push_service).values())
    document.refresh_from_db()
    assert document.evaluated_at is not None


# --- the preset rule ---------------------------------------------------------------------------------------------


def test_a_new_organisation_starts_with_the_preset_rule_and_it_fires(db, push_service, ingest):
    created = organization_create(slug="newco", name="NewCo", admin_email="admin@newco.example")
    (preset,) = DispatchRule.objects.filter(organization=created.organization)
    assert (preset.hazard, preset.min_intensity, preset.target_mode) == ("earthquake", "5+", "based")
    assert preset.enabled and preset.is_preset and preset.hold_minutes == 0
    based = safety_person(created.organization, "sendai", region_code=MIYAGI)
    elsewhere = safety_person(created.organization, "osaka", region_code=OSAKA)
    subscribe(push_service, based)
    subscribe(push_service, elsewhere)

    ingest(raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")

    incident = Incident.objects.get(organization=created.organization)
    assert asked(incident) == {based.id}
    decision = JmaDecision.objects.get(organization=created.organization)
    assert decision.rule_ids == [preset.id]
    assert pushes_by_person(push_service).keys() == {based.id}


# --- special warnings --------------------------------------------------------------------------------------------


def test_a_special_warning_lifted_and_issued_again_is_a_new_incident(org, push_service, smtp_server, ingest):
    rule(org, name="特別警報", hazard="special_warning")
    nara = safety_person(org, "nara", region_code=NARA, language="en")
    osaka = safety_person(org, "osaka", region_code=OSAKA)
    subscribe(push_service, nara)
    subscribe(push_service, osaka)

    ingest(raw(NARA_ISSUED), "https://jma.example/nara-1.xml")
    first = Incident.objects.get()
    assert first.titles["ja"] == "災害発生：大雨特別警報 奈良県"
    assert first.titles["en"] == "Disaster occurred: Heavy rain special warning — Nara"
    assert first.jma_event.startswith("special_warning|通常|33|29@")
    assert asked(first) == {nara.id}
    assert push_titles(push_service) == {nara.id: [first.titles["en"]]}

    continued = ingest(raw(NARA_CONTINUED), "https://jma.example/nara-2.xml")
    assert JmaDecision.objects.get(document=continued).decision == "ignore"  # 継続, and 奈良 was asked already
    lifted = ingest(raw(NARA_LIFTED), "https://jma.example/nara-5.xml")
    assert JmaDecision.objects.get(document=lifted).reason_code == "lifted"
    assert Incident.objects.count() == 1 and len(push_service.received) == 1

    again = reissued(NARA_ISSUED, at="2011-09-08T06:00:00+09:00", control_at="2011-09-07T21:00:00Z")
    ingest(again, "https://jma.example/nara-again.xml")
    second = Incident.objects.exclude(id=first.id).get()
    assert second.jma_event != first.jma_event and second.jma_event.startswith("special_warning|通常|33|29@")
    assert second.titles == first.titles
    assert asked(second) == {nara.id}
    assert push_titles(push_service) == {nara.id: [first.titles["en"], second.titles["en"]]}
    assert mail_subjects(smtp_server) == {nara.email: [first.titles["en"], second.titles["en"]]}


# --- chosen departments ------------------------------------------------------------------------------------------


def test_a_chosen_department_rule_reaches_exactly_that_subtrees_safety_users(org, tree, push_service, ingest):
    hq = safety_person(org, "hq", department=tree.hq, region_code=OSAKA)
    sales = safety_person(org, "sales", department=tree.sales, region_code=OSAKA)
    east = safety_person(org, "east", department=tree.east)
    plant = safety_person(org, "plant", department=tree.plant, region_code=MIYAGI)
    safety_person(org, "sales-no-anpi", department=tree.sales, anpi=False)
    gone = safety_person(org, "sales-left", department=tree.sales)
    User.objects.filter(id=gone.id).update(is_active=False)
    for person in (hq, sales, east, plant):
        subscribe(push_service, person)
    rule(org, target_mode="chosen", department_ids=[tree.sales.id])

    ingest(raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")

    incident = Incident.objects.get()
    assert asked(incident) == {sales.id, east.id}
    assert pushes_by_person(push_service).keys() == {sales.id, east.id}


# --- the commit hook never fails the caller ------------------------------------------------------------------------


@pytest.fixture
def push_endpoint(settings: Any) -> Iterator[None]:
    settings.JMA_INGEST_TOKEN = TOKEN
    yield


def post_document(client: Any, data: bytes, url: str) -> Any:
    return client.post(
        f"/api/jma/documents/?url={url}",
        data=data,
        content_type="application/xml",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
    )


@pytest.mark.django_db(transaction=True)
def test_the_rest_endpoint_answers_201_when_deciding_fails_and_the_scan_sends_it(
    org, people, push_service, smtp_server, client, push_endpoint, monkeypatch
):
    """Real commits (a transactional test): the hook runs inside the request, as in production."""
    rule(org)
    calls = {"n": 0}
    real = autodispatch.jma_document_decide

    def fail_once(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the database went away")
        return real(**kwargs)

    monkeypatch.setattr(autodispatch, "jma_document_decide", fail_once)

    response = post_document(client, raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")

    assert response.status_code == 201, response.content
    document = JmaDocument.objects.get()
    assert document.evaluated_at is None and not JmaDecision.objects.exists() and not push_service.received

    assert safety_scan()["jma_decided"] == 1
    incident = Incident.objects.get()
    assert asked(incident) == {people.miyagi.id, people.fukushima.id}
    assert len(push_service.received) == 2 and len(smtp_server.messages) == 2
    assert post_document(client, raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml").status_code == 200
    assert len(push_service.received) == 2 and Dispatch.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_rest_endpoint_answers_201_when_one_organisation_fails_to_decide(
    org, people, push_service, client, push_endpoint, monkeypatch
):
    rule(org)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(autodispatch, "decide", boom)
    response = post_document(client, raw(TOHOKU_VXSE51), "https://jma.example/tohoku-vxse51.xml")
    assert response.status_code == 201
    assert JmaDocument.objects.get().evaluated_at is None and not Incident.objects.exists()


def test_a_report_that_was_old_when_it_arrived_is_logged_and_sends_nothing(
    org: Organization, ingest: Callable[..., JmaDocument], settings: Any
) -> None:
    """A sample file ingested by hand, or the hours of entries a first poll finds, must not send real checks
    today; the log says why. Replay is not bound by it (it asks what would have happened)."""
    settings.JMA_DISPATCH_MAX_AGE_MINUTES = 60
    rule(org)
    miyagi = safety_person(org, "miyagi", region_code=MIYAGI)
    document = ingest(raw(TOHOKU_VXSE51), "https://example.jp/data/stale_vxse51.xml")
    decision = JmaDecision.objects.get(organization=org, document=document)
    assert (decision.decision, decision.reason_code) == ("ignore", "stale")
    assert "JMA_DISPATCH_MAX_AGE_MINUTES" in decision.reason
    assert not Incident.objects.filter(organization=org).exists()
    [(line, _outcome)] = autodispatch.replay(org, [("vxse51.xml", raw(TOHOKU_VXSE51))])
    assert line["decision"] == "dispatch" and line["new_targets"] == [miyagi.login_id]


def test_a_fresh_report_within_the_age_limit_dispatches(
    org: Organization, ingest: Callable[..., JmaDocument], settings: Any
) -> None:
    settings.JMA_DISPATCH_MAX_AGE_MINUTES = 60
    rule(org)
    safety_person(org, "miyagi", region_code=MIYAGI)
    now = timezone.localtime(timezone.now(), timezone.get_fixed_timezone(9 * 60)).replace(microsecond=0)
    fresh = reissued(
        TOHOKU_VXSE51,
        at=(now - timedelta(minutes=3)).isoformat(),
        control_at=(now - timedelta(minutes=3)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    document = ingest(fresh, "https://example.jp/data/fresh_vxse51.xml")
    decision = JmaDecision.objects.get(organization=org, document=document)
    assert decision.decision == "dispatch", decision.reason


def test_the_crisis_team_is_told_when_an_automatic_incident_opens(
    org: Organization, ingest: Callable[..., JmaDocument]
) -> None:
    """Nobody pressed send: crisis managers and safety administrators get the incident's link."""
    from directory.models import Role

    rule(org)
    safety_person(org, "miyagi", region_code=MIYAGI)
    crisis = safety_person(org, "crisis", roles=(Role.CRISIS_MANAGER,))
    anpi = safety_person(org, "anpi-admin", roles=(Role.ADMIN_ANPI,))
    safety_person(org, "worker")
    ingest(raw(TOHOKU_VXSE51), "https://example.jp/data/team_vxse51.xml")
    incident = Incident.objects.get(organization=org)
    assert incident.notify_user_ids == sorted([crisis.id, anpi.id])


def test_the_answer_page_of_an_automatic_incident_is_titled_in_the_readers_language(
    org: Organization, ingest: Callable[..., JmaDocument]
) -> None:
    from django.test import Client

    from safety.services import answer_url

    rule(org)
    english = safety_person(org, "miyagi-en", region_code=MIYAGI, language="en")
    japanese = safety_person(org, "miyagi-ja", region_code=MIYAGI, language="ja")
    ingest(raw(TOHOKU_VXSE51), "https://example.jp/data/page_vxse51.xml")
    incident = Incident.objects.get(organization=org)
    en_page = Client().get(answer_url(incident, english.id)).content.decode()
    ja_page = Client().get(answer_url(incident, japanese.id)).content.decode()
    assert incident.titles["en"] in en_page and "Disaster occurred" in en_page
    assert incident.titles["ja"] in ja_page and "災害発生" in ja_page


def test_a_crisis_manager_stops_a_held_dispatch_and_a_later_report_can_ask_those_people_again(
    org, people, push_service, ingest, after_commit
):
    from config.errors import ApplicationError
    from directory.models import Role

    manager = safety_person(org, "crisis-stop", roles=(Role.CRISIS_MANAGER,))
    rule(org, hold_minutes=10)
    ingest(raw(TOHOKU_VXSE51), "https://jma.example/hold-stop-vxse51.xml")
    decision = JmaDecision.objects.get()
    stopped = after_commit(autodispatch.decision_cancel, organization=org, decision_id=decision.id, actor=manager)
    assert stopped.executed_at is not None and "cancelled during the hold by" in stopped.reason
    JmaDecision.objects.filter(id=decision.id).update(due_at=timezone.now() - timedelta(minutes=1))
    after_commit(safety_scan)
    assert not Incident.objects.exists() and not push_service.received
    with pytest.raises(ApplicationError):  # it has gone (stopped): neither again nor "send now"
        autodispatch.decision_cancel(organization=org, decision_id=decision.id, actor=manager)
    # The quake was real after all: its VXSE53 asks the same people again (they were never sent anything).
    later = ingest(raw(TOHOKU_VXSE53), "https://jma.example/hold-stop-vxse53.xml")
    again = JmaDecision.objects.get(document=later)
    assert again.decision == "dispatch" and {people.miyagi.id, people.fukushima.id} <= set(again.new_person_ids)


def test_send_now_skips_the_rest_of_the_hold_and_a_rule_switched_off_during_the_hold_sends_nothing(
    org, people, push_service, ingest, after_commit
):
    from directory.models import Role

    manager = safety_person(org, "crisis-now", roles=(Role.CRISIS_MANAGER,))
    held = rule(org, hold_minutes=10)
    ingest(raw(TOHOKU_VXSE51), "https://jma.example/hold-now-vxse51.xml")
    decision = JmaDecision.objects.get()
    after_commit(autodispatch.decision_send_now, organization=org, decision_id=decision.id, actor=manager)
    assert asked(Incident.objects.get()) == {people.miyagi.id, people.fukushima.id}

    autodispatch.rule_update(rule=held, actor=manager, enabled=False)
    other = rule(org, name="別ルール", hold_minutes=10, min_intensity="4")
    ingest(raw(NOTO_VXSE51), "https://jma.example/hold-off-noto.xml")
    pending = JmaDecision.objects.get(document__url="https://jma.example/hold-off-noto.xml")
    autodispatch.rule_update(rule=other, actor=manager, enabled=False)
    JmaDecision.objects.filter(id=pending.id).update(due_at=timezone.now() - timedelta(minutes=1))
    after_commit(safety_scan)
    pending.refresh_from_db()
    assert pending.executed_at is not None and "switched off or deleted" in pending.reason
    assert Incident.objects.count() == 1
