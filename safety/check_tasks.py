"""Celery tasks of contact verification (連絡先の確認); safety.tasks imports them so the worker registers them.
Each is a thin interface over safety.checks."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.utils import timezone

from safety import checks

__all__ = ["contact_check_run", "contact_check_scan"]


@shared_task(acks_late=True)
def contact_check_run(check_id: int) -> int:
    """Send a check's queued test notifications. Idempotent: a second run, or one after a crash, sends nothing
    twice."""
    return checks.contact_check_run(check_id=check_id)


@shared_task
def contact_check_scan(now: datetime | None = None) -> dict[str, int]:
    """Beat, every minute: start the scheduled checks that are due (once each, whatever the number of scans
    running at once), and restart the runs whose worker stopped reporting. `now` is for tests."""
    now = now or timezone.now()
    started = [
        check.id
        for organization_id in checks.checks_due(now=now)
        if (check := checks.check_scheduled_start(organization_id=organization_id, now=now)) is not None
    ]
    # A check started just now is queued on commit already.
    stalled = [i for i in checks.stalled_check_ids(now=now) if i not in started]
    for check_id in stalled:
        contact_check_run.delay(check_id)
    return {"started": len(started), "resumed": len(stalled)}
