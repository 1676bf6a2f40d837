"""Durable parts of the live event flow and delivery: per-stream sequence counters, the outbox, push subscriptions,
and what bounce reports told us about e-mail addresses."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Stream(models.Model):
    """One row per event stream (a channel-layer group). `last_seq` is bumped inside the writer's
    transaction, so sequence numbers are gap-free and follow commit order within a stream."""

    key = models.CharField(max_length=100, unique=True)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}@{self.last_seq}"


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it describes.

    It is relayed to the channel layer (and web push) after commit; a beat task relays any that a dead
    process left behind. Rows are kept for EVENT_RETENTION_HOURS so reconnecting clients can catch up."""

    stream = models.CharField(max_length=100)
    seq = models.BigIntegerField()
    type = models.CharField(max_length=64)
    data = models.JSONField()
    # Web push requested with this event: {"user_ids": [...], "notification": {...}, "ttl": s, "urgency": ...}
    push = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    push_claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["stream", "seq"], name="outbox_stream_seq_unique")]
        indexes = [
            models.Index(fields=["published_at", "created_at"], name="outbox_unpublished_idx"),
            models.Index(fields=["created_at"], name="outbox_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.stream}#{self.seq} {self.type}"


class PushSubscription(models.Model):
    """One browser's web push subscription for one person."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_subscriptions")
    endpoint = models.URLField(max_length=2048, unique=True)
    p256dh = models.CharField(max_length=128)
    auth = models.CharField(max_length=64)
    user_agent = models.CharField(max_length=300, blank=True)
    # The VAPID public key the browser subscribed with; key rotation keeps old keys until these are gone.
    vapid_public_key = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    failure_count = models.IntegerField(default=0)
    # Set from a 429's Retry-After: no push is sent to this endpoint before then.
    retry_after = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user_id}:{self.endpoint[:60]}"


class BounceSource(models.TextChoices):
    DSN = "dsn", "dsn"
    WEBHOOK = "webhook", "webhook"


class MailAddressState(models.Model):
    """What bounce reports told us about one e-mail address (lower-cased), whoever uses it.

    A permanent failure (a DSN's `Action: failed` with a 5.x.x status, a provider's permanent bounce) sets
    `failing`; a transient one (delayed, 4.x.x) is counted and leaves it as it was. Only `address_recovered`
    clears it: a later accepted SMTP hand-off proves nothing about the mailbox."""

    address = models.CharField(max_length=254, unique=True)
    failing = models.BooleanField(default=False)
    bounce_count = models.PositiveIntegerField(default=0)
    last_status = models.CharField(max_length=16, blank=True)
    last_diagnostic = models.CharField(max_length=200, blank=True)
    last_bounce_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=8, choices=BounceSource.choices, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.address}{' failing' if self.failing else ''}"
