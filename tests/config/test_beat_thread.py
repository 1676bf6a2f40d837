"""The embedded default runs the beat schedule in-process: every periodic task, when due."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from config.beat_thread import beat_entries, beat_tick
from consumers.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_periodic_task_but_the_jma_poll_runs_in_process() -> None:
    entries = beat_entries()
    assert {"outbox-relay", "outbox-prune", "talk-archive", "talk-retention"} <= set(entries)
    assert "jma-poll" not in entries  # it keeps its own switch, JMA_POLL_IN_PROCESS


def test_a_due_entry_runs_its_task_and_waits_its_interval() -> None:
    event = OutboxEvent.objects.create(
        stream="org.1", seq=1, type="notice.posted", data={}, created_at=timezone.now() - timedelta(minutes=1)
    )
    entries = {"outbox-relay": ("consumers.tasks.outbox_relay", 5.0)}
    due: dict[str, float] = {}
    assert beat_tick(entries, due, now=100.0) == ["outbox-relay"]
    event.refresh_from_db()
    assert event.published_at is not None  # the relay task really ran
    assert beat_tick(entries, due, now=104.0) == []
    assert beat_tick(entries, due, now=105.0) == ["outbox-relay"]
