"""Safety data. For now: the JMA PULL feeds we poll and every JMA document we have received."""

from __future__ import annotations

from django.db import models


class JmaFeed(models.Model):
    """A PULL feed (Atom) and what the last conditional GET told us about it."""

    url = models.URLField(max_length=500, unique=True)
    etag = models.CharField(max_length=500, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.url


class JmaSource(models.TextChoices):
    PULL = "pull", "pull"
    PUSH = "push", "push"
    FILE = "file", "file"


class JmaDocument(models.Model):
    """One JMA XML message, keyed by its document URL, stored exactly as received with its parsed summary.

    Only documents that parse are stored: a document that fails to parse leaves no row, so it can never be
    mistaken for a report, and the poller fetches it again on its next run."""

    url = models.CharField(max_length=500, unique=True)
    source = models.CharField(max_length=8, choices=JmaSource.choices)
    raw = models.BinaryField()
    sha256 = models.CharField(max_length=64, db_index=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    title = models.CharField(max_length=200)
    status = models.CharField(max_length=10)
    info_type = models.CharField(max_length=10)
    kind = models.CharField(max_length=16, db_index=True)
    type_code = models.CharField(max_length=16, blank=True)
    event_ids = models.JSONField(default=list)
    serial = models.IntegerField(null=True, blank=True)
    report_datetime = models.DateTimeField(null=True, blank=True, db_index=True)
    headline = models.TextField(blank=True)
    # report.inspect_dict() plus epicenter_name, magnitude and origin_time.
    summary = models.JSONField(default=dict)

    class Meta:
        ordering = ["-report_datetime", "-id"]
        indexes = [models.Index(fields=["-received_at", "-id"], name="jmadoc_latest")]

    def __str__(self) -> str:
        return f"{self.title} {self.url}"

    @property
    def is_drill(self) -> bool:
        return self.status != "通常"
