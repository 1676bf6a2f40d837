"""Celery tasks of talk: the talk-log archive (beat, every TALK_ARCHIVE_SECONDS) and the daily retention.
Each is a thin interface over chat.logs; one organisation's failure is logged and the others still run."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from chat.logs import talk_log_archive, talk_retention_apply
from chat.models import Room
from directory.models import Organization

logger = logging.getLogger(__name__)


@shared_task
def talk_archive() -> int:
    """Archive every organisation's messages into its talk log files. Returns how many were archived."""
    archived = 0
    # Only organisations that have rooms can have messages.
    for organization in Organization.objects.filter(id__in=Room.objects.values("organization_id")).order_by("id"):
        try:
            archived += talk_log_archive(organization=organization)
        except Exception:
            logger.exception("talk log archive failed for organisation %s", organization.id)
    return archived


@shared_task
def talk_retention() -> int:
    """For each organisation with a retention period: archive first (what is removed must be in a log),
    then remove messages older than the period. Returns how many messages were removed."""
    removed = 0
    for organization in Organization.objects.filter(talk_settings__retention_days__isnull=False).order_by("id"):
        now = timezone.now()
        try:
            talk_log_archive(organization=organization, now=now)
            removed += talk_retention_apply(organization=organization, now=now)
        except Exception:
            logger.exception("talk retention failed for organisation %s", organization.id)
    return removed
