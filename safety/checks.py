"""Contact verification (連絡先の確認): everyone who uses the safety confirmation gets a test notification on every
channel they have and confirms it with one tap, so the administrators learn whose contacts would fail on the day.

What belongs here: the services of a check (start, send, confirm, receipts, resend, the schedule and its scan), the
signed link of a check, who may see and run checks, and `contact_problems`, the one definition of a person's
contact problems that the checks page, its API and the directory badge all read.

The flow is the safety send's (safety.services.dispatch_run): `check_start` writes one ContactCheckPerson per
person and one ContactCheckDelivery per (person, channel) in one transaction and queues
`safety.check_tasks.contact_check_run` on commit; the run claims queued rows (`claimed_at`, SKIP LOCKED), sends a
batch, marks each row sent or failed and beats the check's heartbeat; `contact_check_scan` (beat) restarts a run
whose heartbeat stopped and starts the scheduled checks that are due. A check is finished once none of its rows is
queued. Nothing here names a private contact address: problems say `email_bounced`, rows carry no address."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from consumers.bounces import address_recovered
from consumers.mail import MailInterrupted, MailMessage, mail_send_results
from consumers.models import MailAddressState, PushSubscription
from consumers.push import push_outcomes_record
from consumers.vapid import vapid_signing
from consumers.webpush import PushMessage, PushSession, PushTarget
from directory.contacts import confirmed_private_addresses
from directory.models import Organization, Role, User
from directory.selectors import department_subtree_ids
from safety.models import (
    DELIVERY_RANK,
    Channel,
    ContactCheck,
    ContactCheckDelivery,
    ContactCheckPerson,
    DeliveryState,
    Incident,
    SafetySettings,
)
from safety.selectors import target_people_ids

logger = logging.getLogger(__name__)

# A person's contact problems, in the order they are listed. `no_contact` replaces the others.
PROBLEM_CODES = ("no_contact", "no_push", "push_failing", "email_bounced", "not_confirmed")
# What a resend reaches by default: anyone with a problem it can do something about.
RESEND_DEFAULT = ("no_push", "push_failing", "email_bounced", "not_confirmed")
MAX_EVERY_DAYS = 365
SALT = "safety.contact-check"
FIRST_PUSH_BATCH = 50  # the first claim of a run's pushes: the first test notifications leave at once
VIAS = {"push": Channel.PUSH, "mail": Channel.EMAIL, "email": Channel.EMAIL}


# --- The signed link ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckLink:
    organization_id: int
    check_id: int
    person_id: int


def check_token(*, organization_id: int, check_id: int, person_id: int) -> str:
    """Django signing of [organisation, check, person] with the check's own salt: it cannot be altered, moved to
    another person or check, or read as an answer link (and an answer link cannot be read as this)."""
    return signing.dumps([organization_id, check_id, person_id], salt=SALT, compress=False)


def check_token_read(token: str) -> CheckLink | None:
    """The link a token stands for, or None if it was altered, is malformed or is older than
    CONTACT_CHECK_LINK_SECONDS."""
    if not isinstance(token, str) or not 10 < len(token) < 300:
        return None
    try:
        value = signing.loads(token, salt=SALT, max_age=settings.CONTACT_CHECK_LINK_SECONDS)
    except (signing.BadSignature, ValueError):
        return None
    if not (isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value)):
        return None
    return CheckLink(organization_id=value[0], check_id=value[1], person_id=value[2])


def check_path(*, slug: str, token: str) -> str:
    """The person's confirm page."""
    return f"/{slug}/check/{token}/"


def check_api_path(*, slug: str, token: str, action: str) -> str:
    """The link APIs: `confirm` and `receipt`."""
    return f"/{slug}/api/safety/checks/link/{token}/{action}/"


def link_person(token: str, *, slug: str) -> ContactCheckPerson:
    """The person of a check a link stands for (with the check, its organisation and the person); Http404 for an
    altered, expired or foreign token (another organisation's URL), or someone no longer active."""
    link = check_token_read(token)
    if link is None:
        raise Http404
    found = (
        ContactCheckPerson.objects.filter(
            check_run_id=link.check_id,
            person_id=link.person_id,
            check_run__organization_id=link.organization_id,
            check_run__organization__slug=slug,
            person__is_active=True,
        )
        .select_related("check_run", "check_run__organization", "person")
        .first()
    )
    if found is None:
        raise Http404
    return found


# --- Who may see and run checks ----------------------------------------------------------------------------------


def can_run_checks(user: User) -> bool:
    """Starts checks, sends again and sets the schedule: system administrators, crisis managers and safety
    administrators (the administrators of the safety confirmation and of the directory)."""
    return user.has_role(Role.SYSTEM_ADMIN, Role.CRISIS_MANAGER, Role.ADMIN_ANPI)


def can_view_checks(user: User) -> bool:
    """Sees the checks and people's contact problems (a department manager: their subtree only)."""
    return can_run_checks(user) or user.has_role(Role.MANAGER, Role.DEPARTMENT_MANAGER)


def check_scope(user: User) -> set[int] | None:
    """The departments whose people `user` sees in checks and problem badges: None for everyone. A department
    manager sees their department's subtree (nothing, without a department); anyone else nothing."""
    if can_run_checks(user) or user.has_role(Role.MANAGER):
        return None
    if user.has_role(Role.DEPARTMENT_MANAGER) and user.department_id:
        return department_subtree_ids(department=user.department)  # type: ignore[arg-type]
    return set()


def access_check(user: User, check_id: int) -> ContactCheck:
    """A check of the caller's organisation the caller may see; Http404 otherwise."""
    if not can_view_checks(user):
        raise Http404
    check = ContactCheck.objects.filter(organization_id=user.organization_id, id=check_id).first()
    if check is None:
        raise Http404
    return check


def latest_check(*, organization: Organization) -> ContactCheck | None:
    """The organisation's latest check, running or finished."""
    return ContactCheck.objects.filter(organization=organization).order_by("-created_at", "-id").first()


def check_list(*, organization: Organization, limit: int = 50) -> list[ContactCheck]:
    return list(ContactCheck.objects.filter(organization=organization).select_related("created_by")[:limit])


# --- Problems ----------------------------------------------------------------------------------------------------


def _safety_people(organization: Organization) -> Any:
    return User.objects.filter(organization=organization, is_active=True, anpi_login_id__isnull=False)


def check_population(*, organization: Organization) -> list[int]:
    """Who a check asks: the same people as a safety send to "everyone" (active, with a safety-confirmation ID)."""
    return target_people_ids(incident=Incident(organization=organization), target={"mode": "everyone"})


def _push_failing(failures: int, last_success: datetime | None, last_failure: datetime | None) -> bool:
    """A subscription is failing when its last push failed: failures counted and no success since the last."""
    if failures <= 0:
        return False
    return last_success is None or last_failure is None or last_success < last_failure


def contact_problems(
    *, organization: Organization, person_ids: Iterable[int] | None = None, check: ContactCheck | None = None
) -> dict[int, list[str]]:
    """person id -> their contact problems (codes of PROBLEM_CODES, in that order), for the safety-confirmation
    users among `person_ids` (None: all of them); people with no problem are left out.

    - `no_contact`: no push subscription and no e-mail address (work or confirmed private); replaces the others;
    - `no_push`: no push subscription;
    - `push_failing`: every subscription is failing, or the check's push delivery failed;
    - `email_bounced`: a work address is failing (bounce reports), or the check's e-mail delivery failed;
    - `not_confirmed`: the check asked them and they have not confirmed.

    `check`: the check to judge by; None means the organisation's latest, running or finished. A few queries,
    whatever the number of people."""
    people = _safety_people(organization)
    if person_ids is not None:
        people = people.filter(id__in=list(person_ids))
    rows = list(people.values_list("id", "email", "email2"))
    if not rows:
        return {}
    ids = [row[0] for row in rows]
    subscriptions: dict[int, list[bool]] = {}
    for user_id, failures, last_success, last_failure in PushSubscription.objects.filter(
        user_id__in=people.values("id")
    ).values_list("user_id", "failure_count", "last_success_at", "last_failure_at"):
        subscriptions.setdefault(user_id, []).append(_push_failing(failures, last_success, last_failure))
    with_private = set(confirmed_private_addresses(ids))
    work = {person_id: [a.strip().lower() for a in (e1, e2) if a and a.strip()] for person_id, e1, e2 in rows}
    failing_addresses = set(
        MailAddressState.objects.filter(failing=True, address__in={a for v in work.values() for a in v}).values_list(
            "address", flat=True
        )
    )
    if check is None:
        check = latest_check(organization=organization)
    failed: set[tuple[int, str]] = set()
    unconfirmed: set[int] = set()
    if check is not None:
        failed = set(
            ContactCheckDelivery.objects.filter(
                check_run=check, person_id__in=people.values("id"), state=DeliveryState.FAILED
            ).values_list("person_id", "channel")
        )
        unconfirmed = set(
            ContactCheckPerson.objects.filter(
                check_run=check, person_id__in=people.values("id"), confirmed_at__isnull=True
            ).values_list("person_id", flat=True)
        )
    problems: dict[int, list[str]] = {}
    for person_id in ids:
        has_push = person_id in subscriptions
        if not has_push and not work[person_id] and person_id not in with_private:
            problems[person_id] = ["no_contact"]
            continue
        codes = []
        if not has_push:
            codes.append("no_push")
        if (has_push and all(subscriptions[person_id])) or (person_id, Channel.PUSH) in failed:
            codes.append("push_failing")
        if any(a in failing_addresses for a in work[person_id]) or (person_id, Channel.EMAIL) in failed:
            codes.append("email_bounced")
        if person_id in unconfirmed:
            codes.append("not_confirmed")
        if codes:
            problems[person_id] = codes
    return problems


def problem_labels() -> dict[str, str]:
    """The words for each problem code, in the current language."""
    return {
        "no_contact": _("No contact at all"),
        "no_push": _("No push notifications"),
        "push_failing": _("Push failing"),
        "email_bounced": _("E-mail bounced"),
        "not_confirmed": _("Not confirmed"),
    }


def problems_clean(raw: Any, *, default: Sequence[str] = RESEND_DEFAULT) -> list[str]:
    """A list of problem codes (None or []: `default`); ApplicationError for anything else."""
    if raw is None or raw == []:
        return list(default)
    if not isinstance(raw, list) or not all(isinstance(c, str) and c in PROBLEM_CODES for c in raw):
        raise ApplicationError(
            _("Unknown problem; use %(codes)s.") % {"codes": ", ".join(PROBLEM_CODES)}, code="bad_problem"
        )
    return [c for c in PROBLEM_CODES if c in raw]


# --- Starting a check, sending it again ------------------------------------------------------------------------


def _settings_locked(organization: Organization) -> SafetySettings:
    """The organisation's settings row, locked: one check starts at a time, one scan moves the schedule."""
    SafetySettings.objects.get_or_create(organization=organization)
    return SafetySettings.objects.select_for_update().get(organization=organization)


def _channels(person_ids: Sequence[int]) -> tuple[set[int], set[int]]:
    """Who of these people has a push subscription, and who an e-mail address (work or confirmed private)."""
    with_push = set(
        PushSubscription.objects.filter(user_id__in=person_ids).values_list("user_id", flat=True).distinct()
    )
    with_mail = set(
        User.objects.filter(id__in=person_ids).filter(~Q(email="") | ~Q(email2="")).values_list("id", flat=True)
    ) | set(confirmed_private_addresses(person_ids))
    return with_push, with_mail


def _run_on_commit(check_id: int) -> None:
    from safety.check_tasks import contact_check_run

    transaction.on_commit(lambda: contact_check_run.delay(check_id), robust=True)


@transaction.atomic
def check_start(*, organization: Organization, actor: User | None, scheduled: bool = False) -> ContactCheck:
    """Start a check: everyone `check_population` names gets a test notification on each channel they have (push
    with a subscription; e-mail with a work address or a confirmed private one). People with neither are still
    in the check (their problem is `no_contact`). Refused (409) while another check is being sent. The sending
    runs after commit in `safety.check_tasks.contact_check_run`."""
    _settings_locked(organization)
    if ContactCheck.objects.filter(organization=organization, finished_at__isnull=True).exists():
        raise ApplicationError(
            _("A contact check is still being sent. Start the next one when it has gone out."),
            code="check_running",
            status=409,
        )
    person_ids = check_population(organization=organization)
    if not person_ids:
        raise ApplicationError(
            _("Nobody to check: only active people with a safety-confirmation ID are sent a contact check."),
            code="no_people",
        )
    now = timezone.now()
    check = ContactCheck.objects.create(
        organization=organization, created_by=actor, created_at=now, scheduled=scheduled, people=len(person_ids)
    )
    ContactCheckPerson.objects.bulk_create(
        [ContactCheckPerson(check_run=check, person_id=p, created_at=now) for p in person_ids], batch_size=2000
    )
    with_push, with_mail = _channels(person_ids)
    rows = [
        ContactCheckDelivery(check_run=check, person_id=p, channel=channel, updated_at=now)
        for p in person_ids
        for channel, who in ((Channel.PUSH, with_push), (Channel.EMAIL, with_mail))
        if p in who
    ]
    ContactCheckDelivery.objects.bulk_create(rows, batch_size=2000)
    if rows:
        _run_on_commit(check.id)
    else:  # nobody has a channel: nothing to send, the check is over
        check.finished_at = now
        check.save(update_fields=["finished_at"])
    return check


@transaction.atomic
def check_resend(*, check: ContactCheck, actor: User | None, problems: Sequence[str] | None = None) -> int:
    """Send the latest check again (its next round) to the people of it who now have any of `problems` (default:
    any problem but `no_contact`), on each channel they have now (a device subscribed since gets a row of its
    own); nobody else is sent anything. Returns how many people. Confirmations already given stay."""
    check = ContactCheck.objects.select_for_update().select_related("organization").get(id=check.id)
    latest = latest_check(organization=check.organization)
    if latest is None or latest.id != check.id:
        raise ApplicationError(_("Only the latest contact check can be sent again."), code="not_latest", status=409)
    codes = set(problems_clean(list(problems) if problems is not None else None))
    asked = ContactCheckPerson.objects.filter(check_run=check).values_list("person_id", flat=True)
    found = contact_problems(organization=check.organization, person_ids=asked, check=check)
    chosen = sorted(p for p, found_codes in found.items() if codes & set(found_codes))
    with_push, with_mail = _channels(chosen)
    people = [p for p in chosen if p in with_push or p in with_mail]
    if not people:
        raise ApplicationError(
            _("Nobody to send to: nobody with these problems has a push subscription or an e-mail address."),
            code="nobody",
        )
    now = timezone.now()
    round_ = check.round + 1
    for channel, who in ((Channel.PUSH, with_push), (Channel.EMAIL, with_mail)):
        targets = [p for p in people if p in who]
        rows = ContactCheckDelivery.objects.filter(check_run=check, channel=channel, person_id__in=targets)
        existing = set(rows.values_list("person_id", flat=True))
        # A channel the person already confirmed on is not sent again (and keeps showing "answered").
        rows.exclude(state=DeliveryState.ANSWERED).update(
            round=round_,
            state=DeliveryState.QUEUED,
            claimed_at=None,
            sent_at=None,
            delivered_at=None,
            opened_at=None,
            error="",
            updated_at=now,
        )
        ContactCheckDelivery.objects.bulk_create(
            [
                ContactCheckDelivery(check_run=check, person_id=p, channel=channel, round=round_, updated_at=now)
                for p in targets
                if p not in existing
            ],
            batch_size=2000,
        )
    check.round, check.finished_at, check.heartbeat_at = round_, None, now
    check.save(update_fields=["round", "finished_at", "heartbeat_at"])
    _run_on_commit(check.id)
    return len(people)


# --- The schedule ------------------------------------------------------------------------------------------------


def every_days_clean(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EVERY_DAYS:
        raise ApplicationError(
            _("every_days must be a whole number of days from 0 (off) to %(max)d.") % {"max": MAX_EVERY_DAYS},
            code="bad_every_days",
        )
    return value


def check_schedule_get(*, organization: Organization) -> tuple[int, datetime | None]:
    """(every how many days, when the next one is due); reading never creates the settings row."""
    row = (
        SafetySettings.objects.filter(organization=organization)
        .values_list("check_every_days", "check_next_at")
        .first()
    )
    return (0, None) if row is None else (int(row[0]), row[1])


@transaction.atomic
def check_schedule_set(*, organization: Organization, every_days: Any, now: datetime | None = None) -> SafetySettings:
    """Run a check every `every_days` days (0: off), the first `every_days` days from now."""
    every_days = every_days_clean(every_days)
    now = now or timezone.now()
    row = _settings_locked(organization)
    row.check_every_days = every_days
    row.check_next_at = now + timedelta(days=every_days) if every_days else None
    row.updated_at = now
    row.save(update_fields=["check_every_days", "check_next_at", "updated_at"])
    return row


def checks_due(*, now: datetime) -> list[int]:
    """Organisations whose scheduled check is due."""
    return list(
        SafetySettings.objects.filter(check_every_days__gt=0, check_next_at__lte=now).values_list(
            "organization_id", flat=True
        )
    )


def check_scheduled_start(*, organization_id: int, now: datetime) -> ContactCheck | None:
    """Start the organisation's scheduled check if it is due, once: under the settings row's lock the due time
    moves past `now` (by whole periods, so a scan that was down for weeks starts one check, not a backlog) in the
    same transaction as the start. A check that cannot start (one still being sent, nobody to check) is skipped
    until the next period."""
    with transaction.atomic():
        row = (
            SafetySettings.objects.select_for_update()
            .select_related("organization")
            .filter(organization_id=organization_id)
            .first()
        )
        if row is None or not row.check_every_days or row.check_next_at is None or row.check_next_at > now:
            return None
        period = timedelta(days=row.check_every_days)
        row.check_next_at += period * ((now - row.check_next_at) // period + 1)
        row.save(update_fields=["check_next_at"])
        try:
            return check_start(organization=row.organization, actor=None, scheduled=True)
        except ApplicationError as exc:
            logger.info("scheduled contact check of organisation %s skipped: %s", organization_id, exc.code)
            return None


def stalled_check_ids(*, now: datetime | None = None) -> list[int]:
    """Checks not finished whose run has not reported for SAFETY_CLAIM_STALE_SECONDS (a dead worker's)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.SAFETY_CLAIM_STALE_SECONDS)
    return list(
        ContactCheck.objects.filter(finished_at__isnull=True)
        .filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, created_at__lt=stale))
        .values_list("id", flat=True)
    )


# --- Sending -----------------------------------------------------------------------------------------------------


def _claim(check: ContactCheck, channel: str, limit: int) -> list[ContactCheckDelivery]:
    """Claim up to `limit` queued rows of this check and channel that no live worker holds, and beat the check's
    heartbeat; the rows come with their person (name, language, addresses)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SAFETY_CLAIM_STALE_SECONDS)
    with transaction.atomic():
        ids = list(
            ContactCheckDelivery.objects.select_for_update(skip_locked=True)
            .filter(check_run=check, channel=channel, state=DeliveryState.QUEUED)
            .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale))
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            ContactCheckDelivery.objects.filter(id__in=ids).update(claimed_at=now)
            ContactCheck.objects.filter(id=check.id).update(heartbeat_at=now)
    if not ids:
        return []
    return list(ContactCheckDelivery.objects.filter(id__in=ids).select_related("person").order_by("id"))


def _touch(check: ContactCheck, rows: Sequence[ContactCheckDelivery]) -> None:
    """Renew the claim on a batch still being sent, and the heartbeat: the scan never hands it to another worker."""
    now = timezone.now()
    ContactCheckDelivery.objects.filter(id__in=[r.id for r in rows], state=DeliveryState.QUEUED).update(claimed_at=now)
    ContactCheck.objects.filter(id=check.id).update(heartbeat_at=now)


def _mark(rows: Sequence[ContactCheckDelivery], state: str, error: str = "") -> None:
    """Rows of this round still queued become `state`: a receipt or a confirmation that came meanwhile wins."""
    if not rows:
        return
    now = timezone.now()
    for round_ in {r.round for r in rows}:
        ContactCheckDelivery.objects.filter(
            id__in=[r.id for r in rows if r.round == round_], round=round_, state=DeliveryState.QUEUED
        ).update(
            state=state,
            sent_at=now if state == DeliveryState.SENT else None,
            error=error[:200],
            claimed_at=None,
            updated_at=now,
        )


def _mark_failed(failures: Sequence[tuple[ContactCheckDelivery, str]]) -> None:
    by_error: dict[str, list[ContactCheckDelivery]] = {}
    for row, error in failures:
        by_error.setdefault(error, []).append(row)
    for error, rows in by_error.items():
        _mark(rows, DeliveryState.FAILED, error)


def _language(person: User) -> str:
    return person.language or settings.LANGUAGE_CODE


def push_payload(check: ContactCheck, person: User) -> dict[str, Any]:
    """The test notification of one person, in their language, by the notification contract (kind "check"): a
    tap opens their confirm page; the one button (`confirm`) confirms from the notification itself, and the
    service worker reports it delivered and opened to `receipt`."""
    slug = check.organization.slug
    token = check_token(organization_id=check.organization_id, check_id=check.id, person_id=person.id)
    with translation.override(_language(person)):
        return {
            "title": _("Contact check: %(organization)s") % {"organization": check.organization.name},
            "body": _(
                "This is a test, nothing has happened. Tap “I got this” so your administrator knows that "
                "notifications reach you."
            ),
            "url": check_path(slug=slug, token=token) + "?via=push",
            "tag": f"check-{check.id}",
            "kind": "check",
            "check": check.id,
            "requireInteraction": True,
            "receipt": check_api_path(slug=slug, token=token, action="receipt"),
            "actions": [
                {
                    "action": "confirm",
                    "title": _("I got this"),
                    "post": check_api_path(slug=slug, token=token, action="confirm"),
                    "body": {"via": "push", "quick": True},
                    "done": _("Thank you. Your administrator can see that notifications reach you."),
                }
            ],
            "queued": _("Will be sent when you are back online."),
            "failed": _("That did not work. Open the notification to confirm."),
        }


def mail_text(check: ContactCheck, person: User) -> tuple[str, str]:
    """(subject, body) of the test e-mail, in the current language: a short note and the person's link."""
    token = check_token(organization_id=check.organization_id, check_id=check.id, person_id=person.id)
    link = settings.SITE_URL + check_path(slug=check.organization.slug, token=token) + "?via=mail"
    body = "\n".join(
        [
            _("%(name)s,") % {"name": person.display_name},
            "",
            _("This is a test of the contact details used for the safety confirmation. Nothing has happened."),
            _("Open the link below and press “I got this”, so your administrator knows that e-mail reaches you:"),
            link,
            "",
            _("This link is yours alone; do not forward it."),
            f"-- {check.organization.name}",
        ]
    )
    return _("Contact check: %(organization)s") % {"organization": check.organization.name}, body


def _send_push(check: ContactCheck, rows: Sequence[ContactCheckDelivery], pusher: PushSession) -> None:
    subscriptions = list(
        PushSubscription.objects.filter(user_id__in=[r.person_id for r in rows]).values_list(
            "id", "user_id", "endpoint", "p256dh", "auth", "vapid_public_key"
        )
    )
    payloads = {r.person_id: push_payload(check, r.person) for r in rows}
    targets = [
        PushTarget(id=id_, endpoint=endpoint, p256dh=p256dh, auth=auth, payload=payloads[user_id], vapid_public_key=key)
        for id_, user_id, endpoint, p256dh, auth, key in subscriptions
    ]
    outcomes = []
    if targets:
        outcomes = pusher.send(
            targets,
            PushMessage(payload={}, ttl=settings.PUSH_DEFAULT_TTL, urgency="normal", topic=f"check{check.id}"),
            **vapid_signing(),  # each target signed with the VAPID key it subscribed with (key rotation)
            meanwhile=partial(_touch, check, rows),
            every=settings.SAFETY_CLAIM_STALE_SECONDS / 3,
        )
        push_outcomes_record(outcomes)
    owner = {id_: user_id for id_, user_id, *_rest in subscriptions}
    ok_people = {owner[o.target_id] for o in outcomes if o.ok}
    # 429: the row stays queued and claimed; the scan sends it again once the claim is stale.
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


def _send_mail(check: ContactCheck, rows: Sequence[ContactCheckDelivery]) -> None:
    messages: list[MailMessage] = []
    sendable: list[ContactCheckDelivery] = []
    unreachable: list[tuple[ContactCheckDelivery, str]] = []
    private_addresses = confirmed_private_addresses([r.person_id for r in rows])
    for row in rows:
        person = row.person
        # Confirmed private addresses too; MailMessage.private keeps them out of errors and logs.
        private = private_addresses.get(person.id, [])
        to = [a for a in (person.email, person.email2) if a] + private
        if not to:
            unreachable.append((row, "no e-mail address"))
            continue
        with translation.override(_language(person)):
            subject, body = mail_text(check, person)
        messages.append(
            MailMessage(to=to, subject=subject, body=body, language=_language(person), private=tuple(private))
        )
        sendable.append(row)
    _mark_failed(unreachable)
    try:
        results = mail_send_results(messages)
    except MailInterrupted as exc:
        done = len(sendable) - len(exc.remaining)
        _mark(sendable[:done], DeliveryState.SENT)
        raise  # the rest stay claimed; the scan hands them out again once the claim is stale
    _mark([r for r, error in zip(sendable, results, strict=True) if error is None], DeliveryState.SENT)
    # Never the server's words: a refusal may quote a private address.
    _mark_failed([(r, "refused by the mail server") for r, error in zip(sendable, results, strict=True) if error])


def contact_check_run(*, check_id: int, batch: int | None = None) -> int:
    """Send every queued row of a check, a batch at a time; safe to run twice at once or again after a crash (rows
    are claimed; a claim goes stale only when its worker stops). Finishes the check when nothing is left queued.
    Returns the number of rows it handled."""
    check = ContactCheck.objects.select_related("organization").filter(id=check_id).first()
    if check is None or check.finished_at is not None:
        return 0
    handled = 0
    with PushSession(concurrency=settings.PUSH_CONCURRENCY) as pusher:
        sends = (
            (Channel.PUSH, partial(_send_push, pusher=pusher), batch or settings.SAFETY_PUSH_BATCH),
            (Channel.EMAIL, _send_mail, batch or settings.SAFETY_DISPATCH_BATCH),
        )
        for channel, send, size in sends:
            first = min(size, FIRST_PUSH_BATCH) if channel == Channel.PUSH else size
            while True:
                rows = _claim(check, channel, first)
                first = size
                if not rows:
                    break
                try:
                    send(check, rows)
                except MailInterrupted:
                    logger.warning("mail server unavailable; contact check %s resumes on the next scan", check_id)
                    return handled
                handled += len(rows)
    _finish(check)
    return handled


@transaction.atomic
def _finish(check: ContactCheck) -> None:
    """Finished once nothing is queued; under the check's row lock, so a resend that re-queues rows meanwhile
    is never finished over."""
    ContactCheck.objects.select_for_update().filter(id=check.id).first()
    if ContactCheckDelivery.objects.filter(check_run=check, state=DeliveryState.QUEUED).exists():
        return  # rows held by another worker or waiting for a retry: the scan comes back
    now = timezone.now()
    ContactCheck.objects.filter(id=check.id, finished_at__isnull=True).update(finished_at=now, heartbeat_at=now)


# --- The person's side: confirming, and the receipts ----------------------------------------------------------


def _forward(
    check_person: ContactCheckPerson,
    channel: str,
    state: str,
    stamp: str | None,
    now: datetime,
    *,
    settle_waiting: bool = False,
) -> None:
    """Move the person's delivery on `channel` forward to `state` (never back, DELIVERY_RANK), and set the time
    field `stamp` once. A row queued for a resend and not yet being sent is left alone unless `settle_waiting`
    (a confirmation): a late receipt of the last round, or an old link opened, must not cancel the resend."""
    rows = ContactCheckDelivery.objects.filter(
        check_run_id=check_person.check_run_id, person_id=check_person.person_id, channel=channel
    )
    if not settle_waiting:
        rows = rows.exclude(state=DeliveryState.QUEUED, claimed_at__isnull=True)
    below = [s for s, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK[state]]
    rows.filter(state__in=below).update(state=state, claimed_at=None, updated_at=now)
    if stamp:
        rows.filter(**{f"{stamp}__isnull": True}).update(**{stamp: now, "updated_at": now})


def check_confirm(token: str, via: str, *, slug: str) -> ContactCheckPerson:
    """The person confirms the test notification (from the notification's button, the page or the e-mail link).
    Idempotent: the first confirmation's time and channel are kept. The delivery it came by shows "answered". A
    confirmation by e-mail of someone with exactly one address proves that address works again (bounces cleared).
    Http404 for a bad link; ApplicationError for an unknown `via`."""
    channel = VIAS.get(via) if isinstance(via, str) else None
    if channel is None:
        raise ApplicationError(_("via must be push or mail."), code="bad_via")
    with transaction.atomic():
        check_person = link_person(token, slug=slug)
        now = timezone.now()
        confirmed = ContactCheckPerson.objects.filter(id=check_person.id, confirmed_at__isnull=True).update(
            confirmed_at=now, confirmed_via=channel
        )
        if confirmed:
            _forward(check_person, channel, DeliveryState.ANSWERED, None, now, settle_waiting=True)
            check_person.confirmed_at, check_person.confirmed_via = now, channel
        else:
            check_person.refresh_from_db(fields=["confirmed_at", "confirmed_via"])
    person = check_person.person
    if confirmed and channel == Channel.EMAIL:
        addresses = [a for a in (person.email, person.email2) if a]
        if len(addresses) == 1 and not confirmed_private_addresses([person.id]):
            address_recovered(addresses[0])
    return check_person


def check_receipt(token: str, *, slug: str, event: Any, channel: Any = "push") -> str:
    """A delivery receipt of the notification contract: `delivered` (the service worker got the push) or `opened`
    (the notification was tapped, or the link opened). Forward only; each time is set once. Returns the state
    after. Http404 for a bad link or a channel the person was not sent on; ApplicationError for a bad event."""
    if event not in ("delivered", "opened"):
        raise ApplicationError(_("event must be delivered or opened."), code="bad_event")
    channel = channel or "push"
    if channel not in (Channel.PUSH, Channel.EMAIL):
        raise ApplicationError(_("channel must be push or email."), code="bad_channel")
    check_person = link_person(token, slug=slug)
    rows = ContactCheckDelivery.objects.filter(
        check_run_id=check_person.check_run_id, person_id=check_person.person_id, channel=channel
    )
    if not rows.exists():
        raise Http404
    _forward(check_person, channel, event, f"{event}_at", timezone.now())
    return str(rows.values_list("state", flat=True).get())


def check_opened(check_person: ContactCheckPerson, via: str) -> None:
    """The person opened their confirm page: the delivery it came by (push with ?via=push, else e-mail) shows
    opened, if there is one."""
    channel = Channel.PUSH if via == "push" else Channel.EMAIL
    _forward(check_person, channel, DeliveryState.OPENED, "opened_at", timezone.now())


# --- The report: counts per problem and the people list -------------------------------------------------------

REPORT_FILTERS = ("", "all", "ok", *PROBLEM_CODES)  # "": anyone with a problem


@dataclass(frozen=True)
class CheckPersonRow:
    person_id: int
    name: str
    kana: str
    department: str
    problems: list[str]
    confirmed_at: datetime | None
    confirmed_via: str
    channels: dict[str, str]  # channel -> delivery state (the channels the check sent on)


@dataclass(frozen=True)
class CheckReport:
    counts: dict[str, int]  # each problem code, "ok", "confirmed" and "total"
    rows: list[CheckPersonRow]  # the page asked for
    matched: int  # people the filter matches, over every page


def check_report(
    *,
    check: ContactCheck,
    scope: set[int] | None,
    problem: str = "",
    department_ids: set[int] | None = None,
    offset: int = 0,
    limit: int = 50,
) -> CheckReport:
    """The people of a check within `scope` (still active), with their problems judged by this check: how many
    have each problem, and one page of those `problem` picks ("": anyone with a problem; "ok"; "all"; a code),
    optionally within `department_ids`, in reading order. A handful of queries for the whole check."""
    people = ContactCheckPerson.objects.filter(check_run=check, person__is_active=True)
    if scope is not None:
        people = people.filter(person__department_id__in=scope)
    rows = list(
        people.order_by("person__last_name_kana", "person__first_name_kana", "person__login_id").values_list(
            "person_id",
            "person__last_name",
            "person__first_name",
            "person__last_name_kana",
            "person__first_name_kana",
            "person__login_id",
            "person__department_id",
            "person__department__name",
            "confirmed_at",
            "confirmed_via",
        )
    )
    found = contact_problems(organization=check.organization, person_ids=[r[0] for r in rows], check=check)
    counts = dict.fromkeys((*PROBLEM_CODES, "ok", "confirmed", "total"), 0)
    for row in rows:
        codes = found.get(row[0], [])
        for code in codes:
            counts[code] += 1
        counts["ok"] += not codes
        counts["confirmed"] += row[8] is not None
        counts["total"] += 1

    def wanted(row: Sequence[Any]) -> bool:
        codes = found.get(row[0], [])
        if department_ids is not None and row[6] not in department_ids:
            return False
        if problem == "all":
            return True
        if problem == "ok":
            return not codes
        return problem in codes if problem else bool(codes)

    matching = [r for r in rows if wanted(r)]
    page = matching[offset : offset + limit]
    channels: dict[int, dict[str, str]] = {}
    for person_id, channel, state in ContactCheckDelivery.objects.filter(
        check_run=check, person_id__in=[r[0] for r in page]
    ).values_list("person_id", "channel", "state"):
        channels.setdefault(person_id, {})[channel] = state
    return CheckReport(
        counts=counts,
        rows=[
            CheckPersonRow(
                person_id=r[0],
                name=f"{r[1]} {r[2]}".strip() or r[5],
                kana=f"{r[3]} {r[4]}".strip(),
                department=r[7] or "",
                problems=found.get(r[0], []),
                confirmed_at=r[8],
                confirmed_via=r[9],
                channels=channels.get(r[0], {}),
            )
            for r in page
        ],
        matched=len(matching),
    )


def check_summaries(*, checks: Sequence[ContactCheck], scope: set[int] | None) -> dict[int, tuple[int, int]]:
    """check id -> (people, confirmed) within `scope`, in one query."""
    people = ContactCheckPerson.objects.filter(check_run_id__in=[c.id for c in checks])
    if scope is not None:
        people = people.filter(person__department_id__in=scope)
    return {
        row["check_run_id"]: (row["people"], row["confirmed"])
        for row in people.values("check_run_id").annotate(
            people=Count("id"), confirmed=Count("id", filter=Q(confirmed_at__isnull=False))
        )
    }
