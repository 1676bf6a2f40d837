"""Celery tasks of the safety app. Each is a thin interface over a service."""

from __future__ import annotations

from celery import shared_task

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
