"""Writes of the safety confirmation: templates, incidents, sends (dispatches), answers and completion.

The event flow is the house one: a service writes in `transaction.atomic` and registers its events with
`publish_on_commit`; sending is a Celery task (`safety.tasks.dispatch_run`) queued on commit, which calls
`dispatch_run` here. Every send is idempotent and resumable: delivery rows are unique per (incident, person,
channel) and claimed before they are sent, and the `safety_scan` beat task restarts a send whose worker stopped
reporting, without waiting for the broker's visibility timeout."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, DateTimeField, Exists, F, Max, OuterRef, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from chat.models import Room
from chat.services import room_admin_grant, room_instruction_create, room_members_add
from config.errors import ApplicationError
from consumers.mail import MailInterrupted, MailMessage, mail_send_results, message_id_for
from consumers.models import PushSubscription
from consumers.publisher import publish_now, publish_on_commit, push_request
from consumers.push import push_outcomes_record
from consumers.vapid import vapid_signing
from consumers.webpush import PushMessage, PushOutcome, PushSession, PushTarget
from directory.contacts import confirmed_private_addresses
from directory.events import org_group, user_group
from directory.models import Department, Organization, Role, RoleAssignment, User
from directory.regions import PREFECTURES
from directory.selectors import department_subtrees
from safety.board import board_followed, board_stream_keys, board_touch, instruction_data
from safety.events import (
    ANSWER_RECORDED,
    BOARD_INSTRUCTION,
    INCIDENT_CHANGED,
    INSTRUCTION_POSTED,
    AnswerEventData,
    IncidentEventData,
    InstructionEventData,
    board_group,
)
from safety.models import (
    DELIVERY_RANK,
    Answer,
    AnswerSource,
    Channel,
    Delivery,
    DeliveryState,
    Dispatch,
    Incident,
    IncidentStatus,
    Instruction,
    MessageTemplate,
    Recipient,
)
from safety.questions import answer_clean, questions_clean, quick_answers
from safety.selectors import (
    ANSWER_FILTERS,
    OPEN_STATUSES,
    TARGET_MODES,
    tally_by_department,
    tally_total,
    target_people_ids,
)
from safety.tokens import answer_path, answer_token

logger = logging.getLogger(__name__)

MAX_TITLE = 200
MAX_MESSAGE = 5000
MAX_END_NOTICE_ADDRESSES = 20
MAX_NOTIFY = 50
PUSH_TTL = 24 * 3600


# --- Templates (定型文) -------------------------------------------------------------------------------------


def _template_fields(name: str, title: str, body: str) -> tuple[str, str, str]:
    name, title, body = name.strip(), title.strip(), body.strip()
    if not name or len(name) > 100:
        raise ApplicationError(_("A template needs a name (at most 100 characters)."), code="bad_name")
    if len(title) > MAX_TITLE:
        raise ApplicationError(_("The title is at most 200 characters."), code="bad_title")
    if len(body) > MAX_MESSAGE:
        raise ApplicationError(_("The message is at most 5,000 characters."), code="bad_message")
    if not title and not body:
        raise ApplicationError(_("A template needs a title or a message."), code="bad_template")
    return name, title, body


def template_create(*, organization: Organization, name: str, title: str = "", body: str = "") -> MessageTemplate:
    name, title, body = _template_fields(name, title, body)
    return MessageTemplate.objects.create(organization=organization, name=name, title=title, body=body)


def template_update(*, template: MessageTemplate, name: str, title: str = "", body: str = "") -> MessageTemplate:
    template.name, template.title, template.body = _template_fields(name, title, body)
    template.save(update_fields=["name", "title", "body"])
    return template


# --- Incidents ----------------------------------------------------------------------------------------------


def _incident_data(incident: Incident, dispatch: Dispatch | None = None) -> IncidentEventData:
    return {
        "id": incident.id,
        "title": incident.title,
        "status": incident.status,
        "is_drill": incident.is_drill,
        "dispatch": dispatch.number if dispatch else None,
    }


def _incident_changed(incident: Incident, dispatch: Dispatch | None = None) -> None:
    """Tell open pages (the organisation stream) and the incident's boards (their ticker) after commit."""
    publish_on_commit(org_group(incident.organization_id), INCIDENT_CHANGED, _incident_data(incident, dispatch))
    incident_id = incident.id
    transaction.on_commit(lambda: board_touch(incident_id), robust=True)


def _addresses_clean(addresses: Sequence[str]) -> list[str]:
    cleaned: list[str] = []
    for address in addresses:
        address = str(address).strip()
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError:
            raise ApplicationError(
                _("Not an e-mail address: %(address)s") % {"address": address[:100]}, code="bad_address"
            ) from None
        if address.lower() not in {a.lower() for a in cleaned}:
            cleaned.append(address)
    if len(cleaned) > MAX_END_NOTICE_ADDRESSES:
        raise ApplicationError(
            _("At most %(n)d end-notice addresses.") % {"n": MAX_END_NOTICE_ADDRESSES}, code="bad_address"
        )
    return cleaned


def _notify_clean(organization: Organization, user_ids: Sequence[int]) -> list[int]:
    ids = sorted({int(i) for i in user_ids})
    if len(ids) > MAX_NOTIFY:
        raise ApplicationError(_("At most %(n)d people can be notified.") % {"n": MAX_NOTIFY}, code="bad_notify")
    found = set(User.objects.filter(organization=organization, id__in=ids, is_active=True).values_list("id", flat=True))
    if found != set(ids):
        raise ApplicationError(_("Some of the people to notify are not in this organisation."), code="bad_notify")
    return ids


def _incident_fields(organization: Organization, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check the fields of an incident form; only the keys present are returned."""
    out: dict[str, Any] = {}
    if "title" in fields:
        title = str(fields["title"] or "").strip()
        if not title or len(title) > MAX_TITLE:
            raise ApplicationError(_("A title is required (at most 200 characters)."), code="bad_title")
        out["title"] = title
    if "message" in fields:
        message = str(fields["message"] or "").strip()
        if not message or len(message) > MAX_MESSAGE:
            raise ApplicationError(_("A message is required (at most 5,000 characters)."), code="bad_message")
        out["message"] = message
    if "tally_start_at" in fields:
        if not isinstance(fields["tally_start_at"], datetime):
            raise ApplicationError(_("The tally start date and time is required."), code="bad_tally_start")
        out["tally_start_at"] = fields["tally_start_at"]
    if "end_notice_at" in fields:
        out["end_notice_at"] = fields["end_notice_at"]
    if "end_notice_addresses" in fields:
        out["end_notice_addresses"] = _addresses_clean(fields["end_notice_addresses"] or [])
    if "collect_location" in fields:
        out["collect_location"] = bool(fields["collect_location"])
    if "questions" in fields:
        out["questions"] = questions_clean(fields["questions"])
    if "notify_user_ids" in fields:
        out["notify_user_ids"] = _notify_clean(organization, fields["notify_user_ids"] or [])
    return out


def _end_notice_check(incident: Incident) -> None:
    if incident.end_notice_at and not incident.end_notice_addresses:
        raise ApplicationError(_("Give at least one address for the end notice."), code="bad_address")
    if incident.end_notice_at and incident.end_notice_at <= incident.tally_start_at:
        raise ApplicationError(_("The end notice must come after the tally start."), code="bad_end_notice")


@transaction.atomic
def incident_create(
    *,
    organization: Organization,
    actor: User | None,
    title: str,
    message: str,
    tally_start_at: datetime | None = None,
    end_notice_at: datetime | None = None,
    end_notice_addresses: Sequence[str] = (),
    collect_location: bool = False,
    questions: Sequence[Mapping[str, Any]] | None = None,
    notify_user_ids: Sequence[int] = (),
    is_drill: bool = False,
) -> Incident:
    """Register an incident as a draft. `questions` None means the default form; [] means no questions."""
    from safety.questions import default_questions

    fields = _incident_fields(
        organization,
        {
            "title": title,
            "message": message,
            "tally_start_at": tally_start_at or timezone.now(),
            "end_notice_at": end_notice_at,
            "end_notice_addresses": end_notice_addresses,
            "collect_location": collect_location,
            "questions": default_questions() if questions is None else list(questions),
            "notify_user_ids": notify_user_ids,
        },
    )
    incident = Incident(organization=organization, created_by=actor, is_drill=is_drill, **fields)
    _end_notice_check(incident)
    incident.save()
    return incident


@transaction.atomic
def incident_update(*, incident: Incident, actor: User, **changes: Any) -> Incident:
    """Change an incident's fields. A completed incident cannot change; the question form cannot change once
    anyone has answered (their answers would no longer match it)."""
    incident = Incident.objects.select_for_update().get(id=incident.id)
    if incident.status == IncidentStatus.COMPLETED:
        raise ApplicationError(_("This incident is completed and can no longer change."), code="incident_completed")
    fields = _incident_fields(incident.organization, changes)
    if "questions" in fields and fields["questions"] != incident.questions and incident.answers.exists():
        raise ApplicationError(
            _("The questions cannot change after people have answered."), code="questions_locked", status=409
        )
    if "end_notice_at" in fields and incident.end_notice_sent_at:
        raise ApplicationError(_("The end notice has already been sent."), code="end_notice_sent", status=409)
    for name, value in fields.items():
        setattr(incident, name, value)
    _end_notice_check(incident)
    incident.save()
    if incident.status != IncidentStatus.DRAFT:
        _incident_changed(incident)
    return incident


def _open(incident: Incident, status: str) -> None:
    first = incident.opened_at is None
    incident.status = status
    if first:
        incident.opened_at = timezone.now()
    incident.save(update_fields=["status", "opened_at"])
    if first:
        from safety.tasks import incident_admins_notify

        incident_id = incident.id
        transaction.on_commit(lambda: incident_admins_notify.delay(incident_id), robust=True)


@transaction.atomic
def incident_open(*, incident: Incident, actor: User) -> Incident:
    """Start accepting answers without sending (people answer in the app); draft → accepting."""
    incident = Incident.objects.select_for_update().get(id=incident.id)
    if incident.status != IncidentStatus.DRAFT:
        raise ApplicationError(_("Only a draft can be opened."), code="not_draft", status=409)
    _open(incident, IncidentStatus.ACCEPTING)
    _incident_changed(incident)
    return incident


@transaction.atomic
def incident_complete(*, incident: Incident, actor: User) -> Incident:
    """Close answers. Unsent deliveries stay unsent, directory badges clear, pages learn it live."""
    incident = Incident.objects.select_for_update().get(id=incident.id)
    if incident.status == IncidentStatus.COMPLETED:
        return incident
    incident.status = IncidentStatus.COMPLETED
    incident.completed_at = timezone.now()
    incident.completed_by = actor
    incident.save(update_fields=["status", "completed_at", "completed_by"])
    Dispatch.objects.filter(incident=incident, finished_at__isnull=True).update(finished_at=incident.completed_at)
    _incident_changed(incident)
    return incident


# --- Sending ------------------------------------------------------------------------------------------------


def target_clean(organization: Organization, raw: Any) -> dict[str, Any]:
    """Check a send's target: {"mode": "everyone"} | {"mode": "chosen", "person_ids": [...]} | {"mode": "filter",
    "department_ids", "regions", "roles", "answer"}."""
    if not isinstance(raw, dict) or raw.get("mode", "everyone") not in TARGET_MODES:
        raise ApplicationError(_("Choose who to send to."), code="bad_target")
    mode = raw.get("mode", "everyone")
    if mode == "everyone":
        return {"mode": mode}

    def int_list(name: str) -> list[int]:
        value = raw.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ApplicationError(_("The target is not valid."), code="bad_target")
        return sorted(set(value))

    if mode == "chosen":
        ids = int_list("person_ids")
        if not ids:
            raise ApplicationError(_("Choose at least one person."), code="bad_target")
        if User.objects.filter(organization=organization, id__in=ids).count() != len(ids):
            raise ApplicationError(_("Some of the chosen people are not in this organisation."), code="bad_target")
        return {"mode": mode, "person_ids": ids}
    departments = int_list("department_ids")
    if Department.objects.filter(organization=organization, id__in=departments).count() != len(departments):
        raise ApplicationError(_("Some of the departments are not in this organisation."), code="bad_target")
    regions = raw.get("regions") or []
    if not isinstance(regions, list) or any(r not in PREFECTURES for r in regions):
        raise ApplicationError(_("Unknown prefecture code."), code="bad_target")
    roles = raw.get("roles") or []
    if not isinstance(roles, list) or any(r not in Role.values for r in roles):
        raise ApplicationError(_("Unknown role."), code="bad_target")
    answer = raw.get("answer") or ""
    if answer and answer not in ANSWER_FILTERS:
        raise ApplicationError(_("Unknown answer filter."), code="bad_target")
    return {
        "mode": mode,
        "department_ids": departments,
        "regions": sorted(set(regions)),
        "roles": sorted(set(roles)),
        "answer": answer,
    }


def delivery_rows(
    *, incident: Incident, dispatch: Dispatch, person_ids: Sequence[int], now: datetime
) -> list[Delivery]:
    """The delivery rows of a send: push for people with a subscription, e-mail for people with an address,
    and in-app for everyone. In-app is sent by the same commit (the incident shows on their pages), so it is
    written as sent."""
    with_push = set(
        PushSubscription.objects.filter(user_id__in=person_ids).values_list("user_id", flat=True).distinct()
    )
    with_mail = set(
        User.objects.filter(id__in=person_ids).filter(~Q(email="") | ~Q(email2="")).values_list("id", flat=True)
    ) | set(confirmed_private_addresses(person_ids))
    rows: list[Delivery] = []
    for person_id in person_ids:
        if person_id in with_push:
            rows.append(
                Delivery(
                    incident=incident, person_id=person_id, channel=Channel.PUSH, dispatch=dispatch, updated_at=now
                )
            )
        if person_id in with_mail:
            rows.append(
                Delivery(
                    incident=incident, person_id=person_id, channel=Channel.EMAIL, dispatch=dispatch, updated_at=now
                )
            )
        rows.append(
            Delivery(
                incident=incident,
                person_id=person_id,
                channel=Channel.INAPP,
                dispatch=dispatch,
                state=DeliveryState.SENT,
                sent_at=now,
                updated_at=now,
            )
        )
    return rows


@transaction.atomic
def dispatch_create(*, incident: Incident, actor: User | None, target: Mapping[str, Any]) -> Dispatch:
    """Send the incident (or send it again) to the people `target` picks among safety-confirmation users.

    People asked before are re-queued on every channel (the next `round` of their delivery rows); new people get
    new rows. Everyone is one recipient row of the incident, so answers from any send count once (合算集計).
    The sending itself runs after commit in `safety.tasks.dispatch_run`."""
    incident = Incident.objects.select_for_update().get(id=incident.id)
    if incident.status == IncidentStatus.COMPLETED:
        raise ApplicationError(_("This incident is completed."), code="incident_completed", status=409)
    target = target_clean(incident.organization, dict(target) if isinstance(target, Mapping) else target)
    person_ids = target_people_ids(incident=incident, target=target)
    if not person_ids:
        raise ApplicationError(
            _("Nobody matches: only active people with a safety-confirmation ID can be sent to."),
            code="no_recipients",
        )
    now = timezone.now()
    opened_before = incident.opened_at is not None
    number = (incident.dispatches.aggregate(n=Max("number"))["n"] or 0) + 1
    dispatch = Dispatch.objects.create(
        incident=incident,
        number=number,
        target=target,
        recipients=len(person_ids),
        created_by=actor,
        created_at=now,
    )
    Recipient.objects.bulk_create(
        [Recipient(incident=incident, person_id=p, first_dispatch=dispatch, created_at=now) for p in person_ids],
        ignore_conflicts=True,
    )
    rows = delivery_rows(incident=incident, dispatch=dispatch, person_ids=person_ids, now=now)
    if number == 1:
        Delivery.objects.bulk_create(rows, batch_size=2000)
    else:
        _requeue(incident, dispatch, rows, now)
    _open(incident, IncidentStatus.SENDING)
    _incident_changed(incident, dispatch)
    from safety.tasks import dispatch_run, incident_admins_notify

    dispatch_id, incident_id = dispatch.id, incident.id
    # Several runners share one send (each claims its own batches, so no row goes twice): with several worker
    # children the pushes of a large send are built, encrypted and sent in parallel.
    for _runner in range(settings.SAFETY_DISPATCH_RUNNERS):
        transaction.on_commit(lambda: dispatch_run.delay(dispatch_id), robust=True)
    if opened_before:
        # Opening told the administrators; managers of departments this send reaches for the first time learn now.
        transaction.on_commit(lambda: incident_admins_notify.delay(incident_id, dispatch_id), robust=True)
    return dispatch


def _requeue(incident: Incident, dispatch: Dispatch, rows: Sequence[Delivery], now: datetime) -> None:
    """A resend: rows that exist go back to queued in their next round; the others are created."""
    existing = set(
        Delivery.objects.filter(incident=incident, person_id__in={r.person_id for r in rows}).values_list(
            "person_id", "channel"
        )
    )
    fresh = [r for r in rows if (r.person_id, r.channel) not in existing]
    again = [r for r in rows if (r.person_id, r.channel) in existing]
    for channel in Channel.values:
        people = [r.person_id for r in again if r.channel == channel]
        if not people:
            continue
        sent_now = channel == Channel.INAPP
        Delivery.objects.filter(incident=incident, channel=channel, person_id__in=people).update(
            dispatch=dispatch,
            round=F("round") + 1,
            state=DeliveryState.SENT if sent_now else DeliveryState.QUEUED,
            sent_at=now if sent_now else None,
            # This round's receipts are still to come (a late one of the last round must not cancel the send:
            # see delivery_report).
            delivered_at=None,
            opened_at=None,
            claimed_at=None,
            error="",
            updated_at=now,
        )
    Delivery.objects.bulk_create(fresh, batch_size=2000)


_CLAIM_SQL = """
WITH c AS MATERIALIZED (
    SELECT id FROM {delivery}
    WHERE dispatch_id = %(dispatch)s AND channel = %(channel)s AND state = 'queued'
        AND (claimed_at IS NULL OR claimed_at < %(stale)s)
    ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), beat AS (
    UPDATE {dispatch} SET heartbeat_at = %(now)s WHERE id = %(dispatch)s AND EXISTS (SELECT 1 FROM c)
)
UPDATE {delivery} AS d SET claimed_at = %(now)s FROM c WHERE d.id = c.id
RETURNING d.id, d.person_id, d.round
"""


def _claim(dispatch: Dispatch, channel: str, limit: int) -> list[Delivery]:
    """Claim up to `limit` queued rows of this send and channel that no live worker holds (and beat the send's
    heartbeat). On PostgreSQL one statement: lock, claim and return the rows in one round trip."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SAFETY_CLAIM_STALE_SECONDS)
    if connection.vendor == "postgresql":
        sql = _CLAIM_SQL.format(delivery=Delivery._meta.db_table, dispatch=Dispatch._meta.db_table)
        params: dict[str, Any] = {"dispatch": dispatch.id, "channel": channel, "stale": stale, "now": now}
        params["limit"] = limit
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            claimed = sorted(cursor.fetchall())
    else:
        with transaction.atomic():
            claimed = list(
                Delivery.objects.select_for_update(skip_locked=True)
                .filter(dispatch=dispatch, channel=channel, state=DeliveryState.QUEUED)
                .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale))
                .order_by("id")
                .values_list("id", "person_id", "round")[:limit]
            )
            if claimed:
                Delivery.objects.filter(id__in=[c[0] for c in claimed]).update(claimed_at=now)
                Dispatch.objects.filter(id=dispatch.id).update(heartbeat_at=now)
    if not claimed or channel != Channel.EMAIL:
        # A push needs only the person's id (for the link).
        return [Delivery(id=id_, person_id=person_id, round=round_) for id_, person_id, round_ in claimed]
    # A mail needs the person's name, addresses and language.
    return list(Delivery.objects.filter(id__in=[c[0] for c in claimed]).select_related("person").order_by("id"))


def _touch(dispatch: Dispatch, rows: Sequence[Delivery]) -> None:
    """Renew the claim on a batch still being sent (and the send's heartbeat): however slow the push service,
    the scan never hands a live worker's rows to another."""
    now = timezone.now()
    Delivery.objects.filter(id__in=[r.id for r in rows], state=DeliveryState.QUEUED).update(claimed_at=now)
    Dispatch.objects.filter(id=dispatch.id).update(heartbeat_at=now)


def _renew(dispatch: Dispatch, rows: Sequence[Delivery], claim: list[float]) -> None:
    """_touch while a push batch is on the wire; `claim` is [monotonic time of the last renewal written]. With
    the database away (a restart) the renewal is skipped, not raised: the batch must still get its outcome
    recorded once the database is back (see _record_sent)."""
    try:
        _touch(dispatch, rows)
    except (OperationalError, InterfaceError) as exc:
        if connection.in_atomic_block:
            raise
        logger.warning("database unavailable, claim of %d rows not renewed: %s", len(rows), exc)
        connection.close()
        return
    claim[0] = time.monotonic()


DB_RETRY_PAUSE = 0.5  # seconds between tries of _record_sent


def _record_sent(record: Callable[[], None], claim: list[float]) -> None:
    """Write what happened to a batch that has left (sent, failed), waiting for the database if it went away
    meanwhile (a restart, a failover). The messages are out: a lost mark would leave the rows queued and claimed,
    and the scan would send them all again once the claim is stale. So the write is tried again, on a new
    connection, for as long as the claim is surely still ours (80% of SAFETY_CLAIM_STALE_SECONDS after its last
    renewal, `claim[0]`, a monotonic time): until then no other worker may take these rows, so waiting can never
    race a resend. After that the error is raised and the scan's resend (same Topic and tag) is what remains.
    `record` must be safe to run again (_mark only changes rows still queued)."""
    until = claim[0] + 0.8 * settings.SAFETY_CLAIM_STALE_SECONDS
    while True:
        try:
            record()
            return
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block or time.monotonic() + DB_RETRY_PAUSE >= until:
                raise
            logger.warning("database unavailable while recording a sent batch, trying again: %s", exc)
            connection.close()
            time.sleep(DB_RETRY_PAUSE)


def _mark(rows: Sequence[Delivery], state: str, error: str = "") -> None:
    if not rows:
        return
    now = timezone.now()
    # An answer that came meanwhile wins: only still-queued rows of this round change, and a resend to someone
    # who had answered shows "answered" once sent (a state only moves forward).
    answered = Exists(
        Recipient.objects.filter(
            incident_id=OuterRef("incident_id"), person_id=OuterRef("person_id"), first_answered_at__isnull=False
        )
    )
    new_state: Any = (
        Case(When(answered, then=Value(DeliveryState.ANSWERED)), default=Value(state)) if state == "sent" else state
    )
    for round_ in {r.round for r in rows}:
        Delivery.objects.filter(
            id__in=[r.id for r in rows if r.round == round_], round=round_, state=DeliveryState.QUEUED
        ).update(
            state=new_state,
            sent_at=now if state == DeliveryState.SENT else None,
            error=error[:200],
            claimed_at=None,
            updated_at=now,
        )


def _mark_failed(failures: Sequence[tuple[Delivery, str]]) -> None:
    """Mark rows failed with their reasons: one UPDATE per distinct reason (a batch's failures share a few)."""
    by_error: dict[str, list[Delivery]] = {}
    for row, error in failures:
        by_error.setdefault(error, []).append(row)
    for error, rows in by_error.items():
        _mark(rows, DeliveryState.FAILED, error)


def answer_url(incident: Incident, person_id: int) -> str:
    token = answer_token(organization_id=incident.organization_id, incident_id=incident.id, person_id=person_id)
    return answer_path(slug=incident.organization.slug, token=token)


# A push service only has to take 4 KB (RFC 8291); the payload stays well under it whatever the title holds.
NOTIFICATION_TITLE = (200, 600)  # characters, UTF-8 bytes
NOTIFICATION_BODY = (160, 480)


def _clip(text: str, limit: tuple[int, int]) -> str:
    """At most `limit` characters and UTF-8 bytes, without control characters (JSON escapes each in 6 bytes)."""
    chars, size = limit
    text = "".join(c if c.isprintable() else " " for c in text[:chars])
    while len(text.encode("utf-8")) > size:
        text = text[:-1]
    return text


def notification_texts(language: str) -> dict[str, str]:
    """The texts of a safety push's answer buttons and of the confirmation the service worker shows, in
    `language` (the person's; "" is the site's)."""
    with translation.override(language or settings.LANGUAGE_CODE):
        safe, help_ = _("Safe"), _("Need help")
        return {
            "safe": safe,
            "help": help_,
            "safe_done": _("Answer sent: %(answer)s") % {"answer": safe},
            "help_done": _("Answer sent: %(answer)s") % {"answer": help_},
            "queued": _("Your answer will be sent when the connection is back."),
            "failed": _("Your answer could not be sent. Open the notification to answer."),
        }


def _notification(
    incident: Incident,
    person_id: int,
    language: str = "",
    texts: Mapping[str, str] | None = None,
    send_round: int = 1,
) -> dict[str, Any]:
    """A safety push for one person: their answer link, the receipt address their service worker reports
    "delivered" and "opened" to, and the answer buttons (無事 / 要支援) the form can take, which post to the
    person's signed answer API without a session (the token is the credential). `texts`: notification_texts of
    the person's language, when the caller has them already."""
    from safety.autodispatch import message_in

    texts = texts or notification_texts(language)
    # An automatic incident's title (and built-in message) is in the person's language, its drill mark included.
    prefix = "[訓練] " if incident.is_drill and not incident.titles else ""
    body = message_in(incident, language) if incident.titles else None
    slug = incident.organization.slug
    token = answer_token(organization_id=incident.organization_id, incident_id=incident.id, person_id=person_id)
    api = f"/{slug}/api/safety/answer/{token}/"
    return {
        "title": _clip(f"{prefix}{incident.title_in(language)}", NOTIFICATION_TITLE),
        "body": _clip(body or incident.message.split("\n", 1)[0], NOTIFICATION_BODY),
        # ?via=push: the answer page records that the answer came from the notification.
        "url": answer_path(slug=slug, token=token) + "?via=push",
        "tag": f"incident-{incident.id}",
        "kind": "safety",
        "incident": incident.id,
        # The send round: the same round again (a batch repeated after a crash) replaces the notification without
        # alerting; the next round (a resend, an escalation) alerts again (sw.js).
        "round": send_round,
        "requireInteraction": True,
        "receipt": f"{api}receipt/",
        "actions": [
            {
                "action": action,
                "title": texts[action],
                "post": api,
                "body": {"values": values, "via": "push", "quick": True},
                "done": texts[f"{action}_done"],
            }
            for action, values in quick_answers(incident.questions).items()
        ],
        "queued": texts["queued"],
        "failed": texts["failed"],
    }


def _send_push(dispatch: Dispatch, rows: Sequence[Delivery], pusher: PushSession) -> None:
    incident = dispatch.incident
    claim = [time.monotonic()]  # the rows were claimed just now
    subscriptions = list(
        PushSubscription.objects.filter(user_id__in=[r.person_id for r in rows]).values_list(
            "id", "user_id", "endpoint", "p256dh", "auth", "vapid_public_key"
        )
    )
    # Everyone reads the buttons (and an automatic incident's title) in their own language.
    languages = dict(User.objects.filter(id__in=[r.person_id for r in rows]).values_list("id", "language"))
    texts = {language: notification_texts(language) for language in set(languages.values())}
    payloads = {
        r.person_id: _notification(
            incident,
            r.person_id,
            languages.get(r.person_id, ""),
            texts.get(languages.get(r.person_id, "")),
            send_round=r.round,
        )
        for r in rows
    }
    targets = [
        PushTarget(id=id_, endpoint=endpoint, p256dh=p256dh, auth=auth, payload=payloads[user_id], vapid_public_key=key)
        for id_, user_id, endpoint, p256dh, auth, key in subscriptions
    ]
    outcomes = []
    if targets:
        outcomes = pusher.send(
            targets,
            PushMessage(payload={}, ttl=PUSH_TTL, urgency="high", topic=f"incident{incident.id}"),
            **vapid_signing(),  # each target signed with the VAPID key it subscribed with (key rotation)
            meanwhile=partial(_renew, dispatch, rows, claim),
            every=settings.SAFETY_CLAIM_STALE_SECONDS / 3,
        )
    _record_sent(partial(_push_outcomes_mark, rows, subscriptions, outcomes), claim)


@transaction.atomic  # all or nothing: _record_sent may run it again after the database came back
def _push_outcomes_mark(
    rows: Sequence[Delivery], subscriptions: Sequence[tuple[Any, ...]], outcomes: Sequence[PushOutcome]
) -> None:
    if outcomes:
        push_outcomes_record(outcomes)
    owner = {id_: user_id for id_, user_id, *_keys in subscriptions}
    ok_people = {owner[o.target_id] for o in outcomes if o.ok}
    # Asked to slow down (429): the row stays queued and claimed, so the scan sends it again once the claim is
    # stale (SAFETY_CLAIM_STALE_SECONDS, well past a usual Retry-After) instead of giving the person up.
    later = {owner[o.target_id] for o in outcomes if o.status == 429} - ok_people
    errors = {owner[o.target_id]: f"{o.status or ''} {o.error or ''}".strip() for o in outcomes if not o.ok}
    _mark([r for r in rows if r.person_id in ok_people], DeliveryState.SENT)
    _mark_failed(
        [
            (r, errors.get(r.person_id) or "no push subscription")
            for r in rows
            if r.person_id not in ok_people and r.person_id not in later
        ]
    )


def _mail_text(incident: Incident, person: User) -> tuple[str, str]:
    # ?via=mail: opening the link marks the e-mail delivery opened.
    link = settings.SITE_URL + answer_url(incident, person.id) + "?via=mail"
    prefix = _("[DRILL] ") if incident.is_drill and not incident.titles else ""
    body = "\n".join(
        [
            _("%(name)s,") % {"name": person.display_name},
            "",
            incident.message,
            "",
            _("Answer here (no sign-in needed):"),
            link,
            "",
            _("This link is yours alone; do not forward it."),
            f"-- {incident.organization.name}",
        ]
    )
    return f"{prefix}{incident.title_in(person.language)}", body


def _send_mail(dispatch: Dispatch, rows: Sequence[Delivery]) -> None:
    incident = dispatch.incident
    claim = [time.monotonic()]  # the rows were claimed just now
    messages: list[MailMessage] = []
    sendable: list[Delivery] = []
    unreachable: list[tuple[Delivery, str]] = []
    private_addresses = confirmed_private_addresses([r.person_id for r in rows])
    for row in rows:
        person = row.person
        # The person's confirmed private addresses too; MailMessage.private keeps them out of errors and logs.
        private = private_addresses.get(person.id, [])
        to = [a for a in (person.email, person.email2) if a] + private
        if not to:
            unreachable.append((row, "no e-mail address"))
            continue
        with translation.override(person.language or settings.LANGUAGE_CODE):
            subject, body = _mail_text(incident, person)
        messages.append(
            MailMessage(
                to=to,
                subject=subject,
                body=body,
                language=person.language,
                private=tuple(private),
                message_id=message_id_for(incident.id, incident.created_at.isoformat(), person.id, row.round),
            )
        )
        sendable.append(row)
    _mark_failed(unreachable)
    try:
        results = mail_send_results(
            messages,
            meanwhile=partial(_renew, dispatch, sendable, claim),
            every=settings.SAFETY_CLAIM_STALE_SECONDS / 3,
        )
    except MailInterrupted as exc:
        done = len(sendable) - len(exc.remaining)
        _record_sent(partial(_mark, sendable[:done], DeliveryState.SENT), claim)
        # The rest stay claimed; the scan hands them to a worker again once the claim is stale.
        raise
    _record_sent(partial(_mail_results_mark, sendable, results), claim)


@transaction.atomic  # all or nothing: _record_sent may run it again after the database came back
def _mail_results_mark(sendable: Sequence[Delivery], results: Sequence[str | None]) -> None:
    _mark([r for r, error in zip(sendable, results, strict=True) if error is None], DeliveryState.SENT)
    _mark_failed([(r, error) for r, error in zip(sendable, results, strict=True) if error is not None])


FIRST_PUSH_BATCH = 50  # the first claim of a send's pushes: time to the first push (P7)


def dispatch_run(*, dispatch_id: int, batch: int | None = None) -> int:
    """Send every queued delivery of a send, a batch at a time; safe to run twice at once or again after a crash
    (rows are claimed; a claim goes stale only when its worker stops). Returns the number of rows it handled."""
    dispatch = Dispatch.objects.select_related("incident", "incident__organization").filter(id=dispatch_id).first()
    if dispatch is None or dispatch.finished_at is not None:
        return 0
    handled = 0
    # One event loop and one HTTP session for all the push batches: connections stay open between them.
    with PushSession(concurrency=settings.PUSH_CONCURRENCY) as pusher:
        sends = (
            (Channel.PUSH, partial(_send_push, pusher=pusher), batch or settings.SAFETY_PUSH_BATCH),
            (Channel.EMAIL, _send_mail, batch or settings.SAFETY_DISPATCH_BATCH),
        )
        for channel, send, size in sends:
            # The first pushes leave after a small batch is ready, not after SAFETY_PUSH_BATCH payloads are built.
            first = min(size, FIRST_PUSH_BATCH) if channel == Channel.PUSH else size
            while True:
                if Incident.objects.filter(id=dispatch.incident_id, status=IncidentStatus.COMPLETED).exists():
                    return handled
                rows = _claim(dispatch, channel, first)
                first = size
                if not rows:
                    break
                try:
                    send(dispatch, rows)
                except MailInterrupted:
                    logger.warning("mail server unavailable; send %s resumes on the next scan", dispatch_id)
                    return handled
                handled += len(rows)
                board_touch(dispatch.incident_id)  # failed rows show on the boards now (safety.escalation)
    _dispatch_finish(dispatch)
    return handled


@transaction.atomic
def _dispatch_finish(dispatch: Dispatch) -> None:
    incident = Incident.objects.select_for_update().get(id=dispatch.incident_id)
    if Delivery.objects.filter(dispatch=dispatch, state=DeliveryState.QUEUED).exists():
        return  # rows held by another worker, or waiting to be retried: the scan comes back
    now = timezone.now()
    Dispatch.objects.filter(id=dispatch.id, finished_at__isnull=True).update(finished_at=now, heartbeat_at=now)
    unfinished = Dispatch.objects.filter(incident=incident, finished_at__isnull=True).exists()
    if incident.status == IncidentStatus.SENDING and not unfinished:
        incident.status = IncidentStatus.ACCEPTING
        incident.save(update_fields=["status"])
        _incident_changed(incident, dispatch)


def stalled_dispatch_ids(*, now: datetime | None = None) -> list[int]:
    """Sends that are not finished and whose worker has not reported for SAFETY_CLAIM_STALE_SECONDS."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.SAFETY_CLAIM_STALE_SECONDS)
    return list(
        Dispatch.objects.filter(finished_at__isnull=True)
        .filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, created_at__lt=stale))
        .values_list("id", flat=True)
    )


# --- Receipts: delivered and opened -------------------------------------------------------------------------

RECEIPT_EVENTS = (DeliveryState.DELIVERED, DeliveryState.OPENED)

_REPORT_SQL = """
UPDATE {delivery} SET
    state = CASE WHEN state IN ({behind}) THEN %s ELSE state END,
    error = CASE WHEN state = 'failed' THEN '' ELSE error END,
    sent_at = COALESCE(sent_at, %s),
    delivered_at = COALESCE(delivered_at, %s),
    opened_at = {opened_at},
    updated_at = %s
WHERE incident_id = %s AND person_id = %s AND channel = %s
    AND (state IN ({behind}) OR delivered_at IS NULL{opened_unset})
    -- A queued row nobody is sending is a resend waiting for its turn: a late receipt of the last round (a phone
    -- back online, an old link opened) must not mark it and so cancel it. A row being sent now may move on.
    AND NOT (state = 'queued' AND claimed_at IS NULL)
RETURNING state
"""


def delivery_report(*, incident_id: int, person_id: int, channel: str, event: str, now: datetime | None = None) -> str:
    """The person's device (or the page they opened) says the notification on `channel` was delivered or opened.
    The delivery moves forward only (DELIVERY_RANK): a late "delivered" never takes an opened or answered row
    back, while a queued or failed row moves on (it evidently arrived; its error is cleared). `delivered_at` and
    `opened_at` are set once, the first time ("opened" implies delivered). One conditional UPDATE; returns the
    state after, or "" when the person has no delivery on that channel."""
    if event not in RECEIPT_EVENTS or channel not in Channel.values:
        raise ApplicationError(_("Unknown receipt."), code="bad_receipt")
    now = now or timezone.now()
    rank = DELIVERY_RANK[event]
    # Our own constants, not input: the states a receipt of this kind moves forward.
    behind = ", ".join(f"'{state}'" for state, r in DELIVERY_RANK.items() if r < rank)
    opened = event == DeliveryState.OPENED
    sql = _REPORT_SQL.format(
        delivery=Delivery._meta.db_table,
        behind=behind,
        opened_at="COALESCE(opened_at, %s)" if opened else "opened_at",
        opened_unset=" OR opened_at IS NULL" if opened else "",
    )
    params: list[Any] = [event, now, now, *([now] if opened else []), now, incident_id, person_id, channel]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is not None:
        return str(row[0])
    # Nothing to change (reported already, or no such delivery).
    state = (
        Delivery.objects.filter(incident_id=incident_id, person_id=person_id, channel=channel)
        .values_list("state", flat=True)
        .first()
    )
    return state or ""


# --- Answers ------------------------------------------------------------------------------------------------


def _location(incident: Incident, location: Mapping[str, Any] | None) -> tuple[float | None, ...]:
    if not incident.collect_location or not isinstance(location, Mapping):
        return (None, None, None)
    try:
        lat, lng = float(location["latitude"]), float(location["longitude"])
        accuracy = float(location["accuracy"]) if location.get("accuracy") is not None else None
    except (KeyError, TypeError, ValueError):
        raise ApplicationError(_("The location is not valid."), code="bad_location") from None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180) or (accuracy is not None and not 0 <= accuracy < 1e7):
        raise ApplicationError(_("The location is not valid."), code="bad_location")
    return (lat, lng, accuracy)


def answer_submit(
    *,
    incident_id: int,
    person: User,
    values: Any,
    source: str,
    location: Mapping[str, Any] | None = None,
    entered_by: User | None = None,
    proxy_note: str = "",
    recipient: Recipient | None = None,
    client_key: str = "",
    quick: bool = False,
) -> Answer:
    """Record the person's answer as their current one, keeping every earlier answer as history; their deliveries
    show "answered". Only people the incident asked can answer, and only while it is open. The caller's HTTP 200
    comes after this commits, so an answer acknowledged is an answer kept.

    `client_key`: the browser's id for this answer (an answer queued offline may be posted twice, or by two tabs
    at once). An answer whose key is stored already is not stored again: the stored one is returned, nothing
    changes and nothing is published, even once the incident has closed. The unique index on the key decides a
    race (`_answer_write`).

    `quick` (a notification button): only the questions `values` names are checked, and they change only those
    answers of the person's current answer (a tap on 要支援 keeps an earlier 重傷).

    `recipient`: the person's row of the incident with its incident, when the caller has just read it (the answer
    endpoints do), so it is not read again; it is given the new answer (or the current one, for a key stored
    already), for the response. The write is one statement that checks the incident is still open, inserts the
    answer and updates the recipient (count and first answer time computed in the row, so concurrent answers of
    one person serialise on its lock) and the deliveries; see `_answer_write`."""
    if recipient is None:
        recipient = Recipient.objects.select_related("incident").filter(incident_id=incident_id, person=person).first()
    if recipient is None or recipient.incident_id != incident_id or recipient.person_id != person.id:
        raise ApplicationError(_("You were not asked to answer this."), code="not_asked", status=403)
    incident = recipient.incident
    if not incident.is_open:
        kept = _answer_kept(recipient, client_key)
        if kept is not None:
            return kept
        raise ApplicationError(_("Answers to this incident are closed."), code="incident_closed", status=409)
    if quick:
        given = answer_clean(incident.questions, values, partial=True)
        current = Recipient.objects.filter(id=recipient.id).values_list("answer__values", flat=True).first()
        merged = {**(current if isinstance(current, dict) else {}), **given.values}
        clean = answer_clean(incident.questions, merged, partial=True)
    else:
        clean = answer_clean(incident.questions, values)
    latitude, longitude, accuracy = _location(incident, location)
    answer = Answer(
        incident=incident,
        person=person,
        values=clean.values,
        status=clean.status,
        needs_help=clean.needs_help,
        latitude=latitude,
        longitude=longitude,
        accuracy=accuracy,
        source=source,
        entered_by=entered_by,
        proxy_note=proxy_note.strip()[:200],
        client_key=client_key,
        created_at=timezone.now(),
    )
    written = _answer_write(recipient, answer)
    if written is None:  # the key was stored already (by an earlier post, or one racing this)
        kept = _answer_kept(recipient, client_key)
        if kept is None:  # pragma: no cover - a stored key is never deleted
            raise ApplicationError(_("Answers to this incident are closed."), code="incident_closed", status=409)
        return kept
    count, first = written
    data: AnswerEventData = {
        "incident_id": incident.id,
        "status": clean.status,
        "needs_help": clean.needs_help,
        "answered_at": answer.created_at.isoformat(),
        "source": source,
    }
    # Ephemeral, after commit: the person's other pages hide their banner now; one that misses it refetches on
    # its next load. No outbox row and stream counter per answer, so a burst of answers stays cheap (P5).
    group = user_group(person.id)
    transaction.on_commit(lambda: publish_now(group, ANSWER_RECORDED, data), robust=True)
    # The boards read the numbers on their ticker's next look: one cache write, not a frame per answer.
    # A lambda, not functools.partial: robust on_commit logs a failure with the callable's __qualname__, which a
    # partial lacks, so a Redis error here would raise AttributeError and turn the stored answer into an HTTP 500.
    transaction.on_commit(lambda: board_touch(incident_id), robust=True)
    recipient.status, recipient.needs_help, recipient.answer = clean.status, clean.needs_help, answer
    recipient.answer_count, recipient.first_answered_at, recipient.answered_at = count, first, answer.created_at
    return answer


def _answer_kept(recipient: Recipient, client_key: str) -> Answer | None:
    """The answer stored with this client key, if any; `recipient` is given the person's current answer (which
    may be a later one) for the response."""
    if not client_key:
        return None
    kept = Answer.objects.filter(
        incident_id=recipient.incident_id, person_id=recipient.person_id, client_key=client_key
    ).first()
    if kept is None:
        return None
    current = Recipient.objects.select_related("answer").get(id=recipient.id)
    recipient.status, recipient.needs_help, recipient.answer = current.status, current.needs_help, current.answer
    recipient.answer_count, recipient.first_answered_at = current.answer_count, current.first_answered_at
    recipient.answered_at = current.answered_at
    return kept


_ANSWER_WRITE_SQL = """
WITH open AS (
    SELECT 1 FROM {incident} WHERE id = %(incident)s AND status IN ('accepting', 'sending')
), a AS (
    INSERT INTO {answer} (incident_id, person_id, "values", status, needs_help, latitude, longitude, accuracy,
                          source, entered_by_id, proxy_note, client_key, created_at)
    SELECT %(incident)s, %(person)s, %(values)s::jsonb, %(status)s, %(help)s, %(lat)s, %(lng)s, %(acc)s,
           %(source)s, %(entered_by)s, %(note)s, %(key)s, %(now)s FROM open
    -- answer_client_key_unique: a key stored already (or by a post racing this one) inserts nothing, so nothing
    -- below changes either.
    ON CONFLICT (incident_id, person_id, client_key) WHERE NOT (client_key = '') DO NOTHING
    RETURNING id
), r AS (
    UPDATE {recipient} SET status = %(status)s, needs_help = %(help)s, answer_id = a.id,
        answer_count = answer_count + 1, answered_at = %(now)s, first_answered_at = COALESCE(first_answered_at, %(now)s)
    FROM a WHERE {recipient}.id = %(recipient)s
    RETURNING {recipient}.answer_count, {recipient}.first_answered_at
), d AS (
    UPDATE {delivery} SET state = 'answered', updated_at = %(now)s, claimed_at = NULL
    WHERE incident_id = %(incident)s AND person_id = %(person)s AND state <> 'answered' AND EXISTS (SELECT 1 FROM a)
)
SELECT a.id, r.answer_count, r.first_answered_at FROM a, r
"""


def _answer_write(recipient: Recipient, answer: Answer) -> tuple[int, datetime] | None:
    """Write the answer, the recipient's current answer and the deliveries' "answered" at once; returns the
    recipient's answer count and first answer time, or None when the answer's client key is stored already
    (nothing was written). ApplicationError if the incident closed meanwhile.

    On PostgreSQL it is one statement (data-modifying CTEs): one round trip, atomic without a transaction of its
    own, about half the cost of the same writes through the ORM (P5, bench.answers). Elsewhere (the embedded
    SQLite) the same writes go through the ORM in a transaction."""
    now = answer.created_at
    if connection.vendor != "postgresql":
        return _answer_write_orm(recipient, answer)
    sql = _ANSWER_WRITE_SQL.format(
        incident=Incident._meta.db_table,
        answer=Answer._meta.db_table,
        recipient=Recipient._meta.db_table,
        delivery=Delivery._meta.db_table,
    )
    params: dict[str, Any] = {
        "incident": recipient.incident_id,
        "person": recipient.person_id,
        "values": json.dumps(answer.values, ensure_ascii=False),
        "status": answer.status,
        "help": answer.needs_help,
        "lat": answer.latitude,
        "lng": answer.longitude,
        "acc": answer.accuracy,
        "source": answer.source,
        "entered_by": answer.entered_by_id,
        "note": answer.proxy_note,
        "key": answer.client_key,
        "now": now,
        "recipient": recipient.id,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        if (
            answer.client_key
            and Answer.objects.filter(
                incident_id=recipient.incident_id, person_id=recipient.person_id, client_key=answer.client_key
            ).exists()
        ):
            return None
        if not Recipient.objects.filter(id=recipient.id).exists():
            raise ApplicationError(_("You were not asked to answer this."), code="not_asked", status=403)
        raise ApplicationError(_("Answers to this incident are closed."), code="incident_closed", status=409)
    answer.id, count, first = row
    return count, first


@transaction.atomic
def _answer_write_orm(recipient: Recipient, answer: Answer) -> tuple[int, datetime] | None:
    now = answer.created_at
    if not Incident.objects.filter(id=recipient.incident_id, status__in=OPEN_STATUSES).exists():
        raise ApplicationError(_("Answers to this incident are closed."), code="incident_closed", status=409)
    try:
        with transaction.atomic():
            answer.save(force_insert=True)
    except IntegrityError:
        if not answer.client_key:
            raise
        return None  # answer_client_key_unique: stored already
    updated = Recipient.objects.filter(id=recipient.id).update(
        status=answer.status,
        needs_help=answer.needs_help,
        answer=answer,
        answer_count=F("answer_count") + 1,
        answered_at=now,
        first_answered_at=Coalesce("first_answered_at", Value(now, output_field=DateTimeField())),
    )
    if not updated:  # the request was deleted meanwhile
        raise ApplicationError(_("You were not asked to answer this."), code="not_asked", status=403)
    Delivery.objects.filter(incident_id=recipient.incident_id, person_id=recipient.person_id).exclude(
        state=DeliveryState.ANSWERED
    ).update(state=DeliveryState.ANSWERED, updated_at=now, claimed_at=None)
    count, first = Recipient.objects.filter(id=recipient.id).values_list("answer_count", "first_answered_at").get()
    return count, first or now


def proxy_answer_submit(
    *, incident: Incident, actor: User, person: User, values: Any, note: str = "", scope: set[int] | None
) -> Answer:
    """A manager enters the answer of someone they reached (by phone, in person). Only for people in the
    manager's scope; the answer records who entered it and how."""
    if scope is not None and person.department_id not in scope:
        raise ApplicationError(_("That person is outside your departments."), code="out_of_scope", status=403)
    if not note.strip():
        raise ApplicationError(_("Say how you reached them (for example, by phone)."), code="bad_note")
    return answer_submit(
        incident_id=incident.id,
        person=person,
        values=values,
        source=AnswerSource.PROXY,
        entered_by=actor,
        proxy_note=note,
    )


# --- Notices that go out later: administrators' link, the end notice -----------------------------------------


def incident_admins_notify(*, incident_id: int, dispatch_id: int | None = None) -> int:
    """Send the incident's admin link to the chosen administrators, and to department managers whose subtree has
    someone the incident asked. Once per incident (claimed by `notified_at`); after that, a later send
    (`dispatch_id`) tells only the department managers whose subtree it reaches for the first time. Returns how
    many people."""
    from consumers.tasks import mail_send

    now = timezone.now()
    if dispatch_id is None and not Incident.objects.filter(id=incident_id, notified_at__isnull=True).update(
        notified_at=now
    ):
        return 0
    incident = Incident.objects.select_related("organization").get(id=incident_id)
    people = set(incident.notify_user_ids) if dispatch_id is None else set()
    asked = Recipient.objects.filter(incident=incident)
    told_departments: set[int | None] = set()
    if dispatch_id is not None:
        told_departments = set(
            asked.filter(first_dispatch_id__lt=dispatch_id).values_list("person__department_id", flat=True).distinct()
        )
        asked = asked.filter(first_dispatch_id=dispatch_id)
    asked_departments = set(asked.values_list("person__department_id", flat=True).distinct())
    managers = User.objects.filter(
        organization_id=incident.organization_id,
        is_active=True,
        department__isnull=False,
        id__in=RoleAssignment.objects.filter(role=Role.DEPARTMENT_MANAGER).values("user_id"),
    ).select_related("department")
    subtrees = department_subtrees(
        organization_id=incident.organization_id, department_ids={m.department_id for m in managers if m.department_id}
    )
    for manager in managers:
        subtree = subtrees.get(manager.department_id or 0, set())
        if subtree & asked_departments and not subtree & told_departments:
            people.add(manager.id)
    recipients = list(User.objects.filter(id__in=people, is_active=True))
    if not recipients:
        return 0
    path = f"/{incident.organization.slug}/safety/incidents/{incident.id}/"
    messages = []
    for person in recipients:
        with translation.override(person.language or settings.LANGUAGE_CODE):
            subject = _("Safety check opened: %(title)s") % {"title": incident.title}
            body = "\n".join([incident.message, "", _("Follow the answers here:"), settings.SITE_URL + path])
        to = [a for a in (person.email,) if a]
        if to:
            messages.append(MailMessage(to=to, subject=subject, body=body, language=person.language).as_dict())
    with transaction.atomic():
        publish_on_commit(
            org_group(incident.organization_id),
            INCIDENT_CHANGED,
            _incident_data(incident),
            push=push_request(
                [p.id for p in recipients],
                title=incident.title,
                body=_("Safety check opened"),
                url=path,
                tag=f"incident-admin-{incident.id}",
                urgency="high",
            ),
        )
        if messages:
            transaction.on_commit(lambda: mail_send.delay(messages), robust=True)
    return len(recipients)


def end_notice_send(*, incident_id: int) -> bool:
    """Send the end-notice e-mail with the final counts, once (claimed by `end_notice_sent_at`)."""
    now = timezone.now()
    claimed = Incident.objects.filter(id=incident_id, end_notice_sent_at__isnull=True, end_notice_at__lte=now).update(
        end_notice_sent_at=now
    )
    if not claimed:
        return False
    incident = Incident.objects.select_related("organization").get(id=incident_id)
    overall = tally_total(tally_by_department(incident=incident))
    with translation.override(settings.LANGUAGE_CODE):
        lines = [
            _("Safety check: %(title)s") % {"title": incident.title},
            _("Asked: %(n)d") % {"n": overall.total},
            _("Answered: %(n)d (%(rate).0f%%)") % {"n": overall.answered, "rate": overall.rate * 100},
            _("Safe: %(n)d") % {"n": overall.counts["safe"]},
            _("Minor injury: %(n)d") % {"n": overall.counts["minor"]},
            _("Serious injury: %(n)d") % {"n": overall.counts["serious"]},
            _("Needs help: %(n)d") % {"n": overall.needs_help},
            _("No answer: %(n)d") % {"n": overall.counts["none"]},
            "",
            settings.SITE_URL + f"/{incident.organization.slug}/safety/incidents/{incident.id}/",
        ]
        subject = _("End of the safety check: %(title)s") % {"title": incident.title}
    message = MailMessage(to=list(incident.end_notice_addresses), subject=subject, body="\n".join(lines))
    try:
        mail_send_results([message])
    except MailInterrupted:
        Incident.objects.filter(id=incident_id).update(end_notice_sent_at=None)  # the next scan tries again
        return False
    return True


def end_notices_due(*, now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return list(
        Incident.objects.filter(end_notice_at__lte=now, end_notice_sent_at__isnull=True)
        .exclude(end_notice_addresses=[])
        .values_list("id", flat=True)
    )


def incidents_unnotified(*, now: datetime | None = None) -> list[int]:
    """Opened incidents whose administrators' link was never claimed (the process died before queueing it)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.SAFETY_CLAIM_STALE_SECONDS)
    return list(Incident.objects.filter(opened_at__lt=stale, notified_at__isnull=True).values_list("id", flat=True))


# --- Instructions (対策指示) and the instruction room (対策室) -------------------------------------------------

MAX_INSTRUCTION = 2000


@transaction.atomic
def instruction_post(*, incident: Incident, actor: User, body: str) -> Instruction:
    """Post an instruction to everyone the incident asked: it streams to every open board of the incident, pages
    of the people asked fetch it, and each of them gets a web push that opens their answer page."""
    incident = Incident.objects.select_for_update().select_related("organization").get(id=incident.id)
    if not incident.is_open:
        raise ApplicationError(
            _("Instructions can be posted only while the incident accepts answers."),
            code="incident_not_open",
            status=409,
        )
    body = str(body or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if not body:
        raise ApplicationError(_("Write the instruction."), code="empty_instruction")
    if len(body) > MAX_INSTRUCTION:
        raise ApplicationError(
            _("An instruction is at most %(n)d characters.") % {"n": MAX_INSTRUCTION}, code="instruction_too_long"
        )
    instruction = Instruction.objects.create(incident=incident, author=actor, body=body)
    data = instruction_data(instruction)
    # Every board of the incident: the whole one and each department's that someone follows (a board opened
    # later gets the instructions in its snapshot).
    for key in sorted(set(board_followed(board_stream_keys(incident.id))) | {board_group(incident.id)}):
        publish_on_commit(key, BOARD_INSTRUCTION, data)
    # People who left since the send are not told (their devices may still be subscribed).
    recipients = list(
        Recipient.objects.filter(incident=incident, person__is_active=True).values_list("person_id", flat=True)
    )
    drill = "【訓練 DRILL】" if incident.is_drill else ""
    event: InstructionEventData = {"incident_id": incident.id, "id": instruction.id}
    publish_on_commit(
        org_group(incident.organization_id),
        INSTRUCTION_POSTED,
        event,
        push=push_request(
            recipients,
            # One notification for everyone, whatever their language.
            title=f"{drill}対策指示 / Instruction: {incident.title}"[:200],
            body=body[:300],
            url=f"/{incident.organization.slug}/safety/{incident.id}/",
            tag=f"instruction-{instruction.id}",
            ttl=PUSH_TTL,
            urgency="high",
        ),
    )
    return instruction


def instruction_room_open(*, incident: Incident, actor: User, member_ids: Sequence[int] = ()) -> Room:
    """The incident's instruction room (対策室), created the first time with the chosen people; later calls add
    the chosen people. Whoever manages incidents and opens it becomes one of its administrators."""
    with transaction.atomic():
        incident = Incident.objects.select_for_update().get(id=incident.id)
        wanted = [int(i) for i in member_ids]
        room = incident.room
        if room is None:
            name = _("Instruction room: %(title)s") % {"title": incident.title}
            if len(name) > 100:
                name = name[:99] + "…"
            room = room_instruction_create(creator=actor, name=name, member_ids=wanted)
            incident.room = room
            incident.save(update_fields=["room"])
            return room
        room_admin_grant(room=room, user=actor)
        if wanted:
            room_members_add(actor=actor, room=room, member_ids=wanted)
        return room
