"""Celery tasks of the safety app. Each is a thin interface over a service."""

from __future__ import annotations

from celery import shared_task

from config.cache import beat_stamp
from safety import autodispatch, escalation, services
from safety.check_tasks import *  # noqa: F403  (contact verification tasks, registered with the worker)
from safety.jma.poller import poll_all


@shared_task
def jma_poll() -> dict[str, int]:
    """Poll JMA's PULL feeds (beat, every JMA_POLL_SECONDS): how many documents were fetched, stored, failed."""
    results = poll_all()
    return {
        "feeds": len(results),
        "fetched": sum(len(r.fetched) for r in results),
        "stored": sum(len(r.stored) for r in results),
        "failed": sum(len(r.failed) + bool(r.error) for r in results),
    }


@shared_task(acks_late=True)
def dispatch_run(dispatch_id: int) -> int:
    """Send one send's deliveries. Idempotent: a second run, or a run after a crash, sends nothing twice."""
    return services.dispatch_run(dispatch_id=dispatch_id)


@shared_task(acks_late=True)
def incident_admins_notify(incident_id: int, dispatch_id: int | None = None) -> int:
    return services.incident_admins_notify(incident_id=incident_id, dispatch_id=dispatch_id)


@shared_task(acks_late=True)
def jma_decide(document_id: int) -> int:
    """Decide a stored JMA document for every organisation and execute what is due now (hold 0)."""
    return len(autodispatch.jma_document_decide(document_id=document_id))


@shared_task(acks_late=True)
def jma_decision_execute(decision_id: int) -> list[int]:
    return autodispatch.decision_execute(decision_id=decision_id)


@shared_task
def safety_scan() -> dict[str, int]:
    """Beat, every SAFETY_SCAN_SECONDS: restart sends whose worker stopped, send due end notices and any
    administrators' link a crash left unsent, and send again to people who have not answered in time
    (escalation). The database is the schedule; nothing waits in the broker."""
    beat_stamp("safety_scan")
    stalled = services.stalled_dispatch_ids()
    for dispatch_id in stalled:
        dispatch_run.delay(dispatch_id)
    ended = [i for i in services.end_notices_due() if services.end_notice_send(incident_id=i)]
    unnotified = services.incidents_unnotified()
    for incident_id in unnotified:
        incident_admins_notify.delay(incident_id)
    # Automatic dispatch: documents a crash left undecided, and decisions whose hold is over.
    undecided = autodispatch.documents_undecided()
    for document_id in undecided:
        jma_decide.delay(document_id)
    due = autodispatch.decisions_due()
    for decision_id in due:
        jma_decision_execute.delay(decision_id)
    # Escalation: one send per incident to its people still unanswered after the organisation's delay (the send
    # itself runs in dispatch_run, queued on commit).
    escalated = sum(escalation.escalate(incident_id=i) for i in escalation.escalations_due())
    return {
        "resumed": len(stalled),
        "end_notices": len(ended),
        "notified": len(unnotified),
        "jma_decided": len(undecided),
        "jma_executed": len(due),
        "escalated": escalated,
    }
