"""Escalation (再送) of people who have not answered, and the people nobody could reach.

Escalation: a person an open incident asked who has still not answered `escalate_after_minutes` after they were
last sent it (the organisation's SafetySettings; no row means DEFAULT_ESCALATE_MINUTES, 0 switches it off) is
sent the incident again, once, on every channel they have. `escalate` makes that one send for all of an
incident's people who are due (`dispatch_create` with the chosen people: the usual idempotent delivery rows, each
in its next round) and stamps their `Recipient.escalated_at` in the same transaction, under the incident's row
lock, so two scans at once send once. `safety_scan` (beat) finds the incidents with anyone due
(`escalations_due`) and escalates each. The clock is a parameter (`now`), so tests step it instead of sleeping.

Unreachable: a person still unanswered whose push and e-mail deliveries (the channels they have; in-app does not
count, it only works if they open the app) have all failed, or who has neither, is listed on the board for their
department managers to call. `unreachable_reasons` turns those delivery rows into reason codes (never an
address) for the board; `safety.board` reads the rows."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from directory.models import Organization, User
from safety.models import Channel, Delivery, DeliveryState, Dispatch, Incident, Recipient, SafetySettings
from safety.selectors import OPEN_STATUSES

logger = logging.getLogger(__name__)

DEFAULT_ESCALATE_MINUTES: int = SafetySettings._meta.get_field("escalate_after_minutes").default
MAX_ESCALATE_MINUTES = 24 * 60

# Why a person could not be reached, in the order the board shows them.
REASONS = ("no_contact", "no_push", "push_gone", "push_failed", "no_email", "email_bounced", "email_failed")


# --- The setting ------------------------------------------------------------------------------------------------


def escalate_minutes_get(*, organization_id: int) -> int:
    """The organisation's escalation delay in minutes (0: off). Reading never creates the settings row."""
    value = (
        SafetySettings.objects.filter(organization_id=organization_id)
        .values_list("escalate_after_minutes", flat=True)
        .first()
    )
    return DEFAULT_ESCALATE_MINUTES if value is None else int(value)


def escalate_minutes_clean(value: Any) -> int:
    """A whole number of minutes from 0 (off) to MAX_ESCALATE_MINUTES; ApplicationError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ESCALATE_MINUTES:
        raise ApplicationError(
            _("escalate_after_minutes must be a whole number of minutes from 0 (off) to %(max)d.")
            % {"max": MAX_ESCALATE_MINUTES},
            code="bad_escalation",
        )
    return value


@transaction.atomic
def escalate_minutes_set(*, organization: Organization, actor: User | None, minutes: Any) -> SafetySettings:
    """Set how long after a send an unanswered person is sent again on every channel (0: never)."""
    from safety.autodispatch import safety_settings

    minutes = escalate_minutes_clean(minutes)
    row = safety_settings(organization, lock=True)
    row.escalate_after_minutes = minutes
    row.updated_at = timezone.now()
    row.save(update_fields=["escalate_after_minutes", "updated_at"])
    return row


# --- Who is due -------------------------------------------------------------------------------------------------


def _due(incident: Incident, cutoff: datetime) -> QuerySet[Recipient]:
    """The incident's people who have not answered, were never escalated, can still be sent to, and were last
    sent it at or before `cutoff`.

    "Last sent": every send that reaches a person moves all their delivery rows to that send (in-app always), so
    a person was sent it after `cutoff` exactly when one of their rows belongs to a send made after it; the
    recipient row itself was written with the first send. The few recent sends are read first, so with none (the
    usual case, minutes after the last send) this is one plain filter on the recipients."""
    rows = Recipient.objects.filter(
        incident=incident,
        status="",
        answer_count=0,
        escalated_at__isnull=True,
        created_at__lte=cutoff,
        # As target_people_ids picks them: someone deactivated meanwhile is not sent to.
        person__is_active=True,
        person__anpi_login_id__isnull=False,
    )
    recent = list(Dispatch.objects.filter(incident=incident, created_at__gt=cutoff).values_list("id", flat=True))
    if recent:
        sent_since = Delivery.objects.filter(
            incident_id=incident.id, person_id=OuterRef("person_id"), dispatch_id__in=recent
        )
        rows = rows.exclude(Exists(sent_since))
    return rows


def _minutes_by_organization(organization_ids: set[int]) -> dict[int, int]:
    stored = dict(
        SafetySettings.objects.filter(organization_id__in=organization_ids).values_list(
            "organization_id", "escalate_after_minutes"
        )
    )
    return {o: int(stored.get(o, DEFAULT_ESCALATE_MINUTES)) for o in organization_ids}


def escalations_due(*, now: datetime | None = None) -> list[int]:
    """The open incidents with someone to send again now. One query for the open incidents, one for their
    organisations' settings, and one small one per open incident with escalation on."""
    now = now or timezone.now()
    incidents = list(Incident.objects.filter(status__in=OPEN_STATUSES).order_by("id"))
    minutes = _minutes_by_organization({i.organization_id for i in incidents})
    return [
        i.id
        for i in incidents
        if minutes[i.organization_id] and _due(i, now - timedelta(minutes=minutes[i.organization_id])).exists()
    ]


def escalate(*, incident_id: int, now: datetime | None = None) -> int:
    """Send the incident again, on every channel, to its people who are due (see `_due`), once per person: one
    send for them all, and their `escalated_at` set, in one transaction under the incident's row lock (a
    concurrent scan waits, then finds nobody due). Returns how many people were sent to."""
    from safety.services import dispatch_create

    now = now or timezone.now()
    with transaction.atomic():
        incident = Incident.objects.select_for_update().filter(id=incident_id).first()
        if incident is None or incident.status not in OPEN_STATUSES:
            return 0
        minutes = escalate_minutes_get(organization_id=incident.organization_id)
        if not minutes:
            return 0
        person_ids = list(
            _due(incident, now - timedelta(minutes=minutes)).order_by("person_id").values_list("person_id", flat=True)
        )
        if not person_ids:
            return 0
        try:
            dispatch = dispatch_create(
                incident=incident, actor=None, target={"mode": "chosen", "person_ids": person_ids}
            )
        except ApplicationError as exc:  # the directory changed under us: the next scan looks again
            logger.warning("escalation of incident %s not sent: %s", incident_id, exc.code)
            return 0
        # The incident page says which send was an escalation.
        Dispatch.objects.filter(id=dispatch.id).update(target={**dispatch.target, "escalation": True})
        Recipient.objects.filter(incident=incident, person_id__in=person_ids).update(escalated_at=now)
    logger.info("incident %s: sent again to %d people who had not answered", incident_id, len(person_ids))
    return len(person_ids)


# --- Who could not be reached -------------------------------------------------------------------------------------


def _push_reason(state: str | None, error: str) -> str | None:
    if state is None:
        return "no_push"
    if state != DeliveryState.FAILED:
        return None
    if error.startswith(("404", "410")):
        return "push_gone"  # the push service says the subscription is gone (it was removed)
    if error == "no push subscription":
        return "no_push"
    return "push_failed"


def _email_reason(state: str | None, error: str) -> str | None:
    if state is None:
        return "no_email"
    if state != DeliveryState.FAILED:
        return None
    if error.startswith("bounced"):
        return "email_bounced"
    if error == "no e-mail address":
        return "no_email"
    return "email_failed"


def failure_reason(channel: str, state: str, error: str) -> str | None:
    """Why a push or e-mail delivery failed, as a code ("push_gone", "email_bounced" …); None if it did not
    fail (or is in-app)."""
    if state != DeliveryState.FAILED:
        return None
    if channel == Channel.PUSH:
        return _push_reason(state, error)
    if channel == Channel.EMAIL:
        return _email_reason(state, error)
    return None


def unreachable_reasons(deliveries: Mapping[str, tuple[str, str]]) -> list[str] | None:
    """Why a person could not be reached, from their push and e-mail delivery rows (channel -> (state, error));
    None while any of the two is not failed (it may still arrive). In-app does not count: it only reaches people
    who open the app. Neither channel at all is `no_contact` alone. Codes only: an error text may hold an address."""
    push, email = deliveries.get(Channel.PUSH), deliveries.get(Channel.EMAIL)
    if push is None and email is None:
        return ["no_contact"]
    reasons = [
        _push_reason(push[0] if push else None, push[1] if push else ""),
        _email_reason(email[0] if email else None, email[1] if email else ""),
    ]
    if None in reasons:
        return None
    return [r for r in reasons if r is not None]
