"""Automatic dispatch under concurrency, with real commits: the after-commit hook, a redelivered task and the
safety scan may decide one document (or execute one decision) at the same moment in different processes. Each
organisation's settings row is the lock that keeps it to one decision and one send.

Real PostgreSQL (transactional tests: each thread has its own connection and commits), the local push service and
aiosmtpd; Celery runs eagerly, so whichever thread executes a decision also sends it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from safety import autodispatch
from safety.jma import ingest as ingest_module
from safety.models import Dispatch, Incident, JmaDecision, JmaDocument, Recipient
from safety.tasks import safety_scan
from tests.safety.conftest import pushes_by_person, safety_person, subscribe
from tests.services import shared_fixtures

pytestmark = pytest.mark.django_db(transaction=True)

TOHOKU_VXSE51 = "earthquake/tohoku2011_vxse51_max6plus_6prefs__32-39_11_01_120615_VXSE51.xml"


def at_once(function: Callable[[], Any], n: int = 3) -> list[Any]:
    """Run `function` in `n` threads released together; each thread uses (and closes) its own connection."""
    barrier = threading.Barrier(n)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(function())
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@pytest.fixture
def stored(org, push_service, monkeypatch) -> Callable[..., JmaDocument]:
    """Store a document without its commit hook (as if the process died right after the commit)."""
    monkeypatch.setattr(ingest_module, "jma_autodispatch_after_commit", lambda document_id: None)

    def store(url: str) -> JmaDocument:
        data = (shared_fixtures("jma") / TOHOKU_VXSE51).read_bytes()
        return ingest_module.jma_document_ingest(url=url, raw=data, source="pull")

    return store


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_workers_deciding_one_document_at_once_decide_and_send_it_once(org, other_org, push_service, stored, caplog):
    autodispatch.rule_create(organization=org, actor=None, name="5+", hazard="earthquake", min_intensity="5+")
    people = [safety_person(org, f"p{i}", region_code="04") for i in range(3)]
    for person in people:
        subscribe(push_service, person)
    document = stored("https://jma.example/a.xml")
    for organization in (org, other_org):
        autodispatch.safety_settings(organization)  # the rows exist already: only their lock orders the workers

    at_once(lambda: autodispatch.jma_document_decide(document_id=document.id))

    assert JmaDecision.objects.filter(organization=org).count() == 1
    assert JmaDecision.objects.filter(organization=other_org).count() == 1
    incident = Incident.objects.get()
    assert Dispatch.objects.count() == 1
    assert set(Recipient.objects.filter(incident=incident).values_list("person_id", flat=True)) == {
        p.id for p in people
    }
    assert {person: len(pushes) for person, pushes in pushes_by_person(push_service).items()} == {
        p.id: 1 for p in people
    }
    assert errors_logged(caplog) == []  # no worker tripped over another (a unique violation, a lost update)


def test_scans_at_once_execute_a_due_decision_once(org, push_service, smtp_server, stored, caplog):
    autodispatch.rule_create(
        organization=org, actor=None, name="5+", hazard="earthquake", min_intensity="5+", hold_minutes=10
    )
    people = [safety_person(org, f"p{i}", region_code="04") for i in range(3)]
    for person in people:
        subscribe(push_service, person)
    document = stored("https://jma.example/a.xml")
    assert safety_scan()["jma_decided"] == 1  # decided, on hold
    decision = JmaDecision.objects.get(organization=org, document=document)
    assert decision.executed_at is None and not Incident.objects.exists()
    JmaDecision.objects.filter(id=decision.id).update(due_at=timezone.now() - timedelta(seconds=1))

    at_once(safety_scan)

    decision.refresh_from_db()
    assert decision.executed_at is not None
    assert Incident.objects.count() == 1 and Dispatch.objects.count() == 1
    assert sorted(len(p) for p in pushes_by_person(push_service).values()) == [1, 1, 1]
    assert sorted(a for m in smtp_server.messages for a in m.envelope_to) == sorted(p.email for p in people)
    assert errors_logged(caplog) == []
