"""Celery tasks of the delivery core. Each is a thin interface over a service."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from config.cache import beat_stamp
from consumers.mail import MailDict, MailInterrupted, MailMessage, mail_send_batch
from consumers.models import OutboxEvent, PushSubscription
from consumers.publisher import relay_pending
from consumers.push import push_send
from consumers.vapid import vapid_prune as vapid_keys_prune

# Far-future work is found by beat scanning the database; a countdown stays well under the visibility timeout.
MAX_RETRY_COUNTDOWN = 600


@shared_task(acks_late=True)
def push_event(event_id: int) -> int:
    """Send the web push an outbox event asked for, once: the first run claims it."""
    claimed = OutboxEvent.objects.filter(id=event_id, push_claimed_at__isnull=True).update(
        push_claimed_at=timezone.now()
    )
    if not claimed:
        return 0
    event = OutboxEvent.objects.get(id=event_id)
    request: dict[str, Any] = event.push or {}
    ids = list(PushSubscription.objects.filter(user_id__in=request.get("user_ids", [])).values_list("id", flat=True))
    if ids:
        webpush_send.delay(ids, request["notification"], request["ttl"], request["urgency"])
    return len(ids)


@shared_task(acks_late=True)
def webpush_send(
    subscription_ids: list[int], notification: dict[str, Any], ttl: int, urgency: str, queued_at: float | None = None
) -> int:
    """Send, and reschedule what a push service asked us to delay, for as long as the push's TTL lasts."""
    queued_at = queued_at or time.time()
    remaining_ttl = int(ttl - (time.time() - queued_at))
    if remaining_ttl <= 0:
        return 0  # too late to matter: the push would have expired at the push service anyway
    retry = push_send(subscription_ids=subscription_ids, notification=notification, ttl=remaining_ttl, urgency=urgency)
    if retry:
        due = PushSubscription.objects.filter(id__in=retry).values_list("retry_after", flat=True)
        earliest = min((d for d in due if d), default=timezone.now() + timedelta(seconds=60))
        countdown = min(MAX_RETRY_COUNTDOWN, max(1, int((earliest - timezone.now()).total_seconds()) + 1))
        if not settings.CELERY_TASK_ALWAYS_EAGER:
            webpush_send.apply_async((retry, notification, ttl, urgency, queued_at), countdown=countdown)
    return len(subscription_ids) - len(retry)


@shared_task(bind=True, acks_late=True, max_retries=5)
def mail_send(self: Any, messages: list[MailDict]) -> int:
    try:
        return mail_send_batch([MailMessage(**m) for m in messages])
    except MailInterrupted as exc:
        # Retry only what was not sent, so nobody gets a message twice.
        if settings.CELERY_TASK_ALWAYS_EAGER:
            raise
        raise self.retry(args=[[m.as_dict() for m in exc.remaining]], countdown=30) from None


@shared_task
def outbox_relay() -> int:
    beat_stamp("outbox_relay")
    return relay_pending()


@shared_task
def outbox_prune() -> int:
    cutoff = timezone.now() - timedelta(hours=settings.EVENT_RETENTION_HOURS)
    deleted, _ = OutboxEvent.objects.filter(created_at__lt=cutoff, published_at__isnull=False).delete()
    return deleted


@shared_task
def vapid_prune() -> int:
    """Drop the earlier VAPID keys no subscription uses any more (beat, hourly). Returns how many."""
    return len(vapid_keys_prune())
