"""Celery tasks of the delivery core. Each is a thin interface over a service."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from consumers.mail import MailDict, MailMessage, mail_send_batch
from consumers.models import OutboxEvent, PushSubscription
from consumers.publisher import relay_pending
from consumers.push import push_send

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
def webpush_send(subscription_ids: list[int], notification: dict[str, Any], ttl: int, urgency: str) -> int:
    retry = push_send(subscription_ids=subscription_ids, notification=notification, ttl=ttl, urgency=urgency)
    if retry:
        due = PushSubscription.objects.filter(id__in=retry).values_list("retry_after", flat=True)
        latest = max((d for d in due if d), default=timezone.now() + timedelta(seconds=60))
        countdown = min(MAX_RETRY_COUNTDOWN, max(1, int((latest - timezone.now()).total_seconds()) + 1))
        if not settings.CELERY_TASK_ALWAYS_EAGER:
            webpush_send.apply_async((retry, notification, ttl, urgency), countdown=countdown)
    return len(subscription_ids) - len(retry)


@shared_task(acks_late=True)
def mail_send(messages: list[MailDict]) -> int:
    return mail_send_batch([MailMessage(**m) for m in messages])


@shared_task
def outbox_relay() -> int:
    return relay_pending()


@shared_task
def outbox_prune() -> int:
    cutoff = timezone.now() - timedelta(hours=settings.EVENT_RETENTION_HOURS)
    deleted, _ = OutboxEvent.objects.filter(created_at__lt=cutoff, published_at__isnull=False).delete()
    return deleted
