"""Bounce reports: what a mail server (an RFC 3464 delivery status notification) or a mail provider's webhook
says about our e-mail, and recording it against the addresses and the safety deliveries.

`dsn_parse` and `webhook_parse` are pure (bytes or JSON in, `Bounce` list out, `BounceParseError` for anything
that is not a report); `bounce_record` is the one write.

The webhook shape (a provider's events, mapped by a small relay or the provider's own template):

    {"events": [{"email": "x@example.com", "type": "bounce" | "permanent" | "transient" | "complaint",
                 "status": "5.1.1", "reason": "550 5.1.1 user unknown"}]}

`status` and `reason` are optional; at most WEBHOOK_MAX_EVENTS events. "bounce" is permanent unless its status
is 4.x.x; a complaint is counted but marks nothing (the address works: its reader flagged the mail)."""

from __future__ import annotations

import email
import email.errors
import email.policy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext as _

from consumers.models import BounceSource, MailAddressState

MAX_REPORT_BYTES = 1024 * 1024
WEBHOOK_MAX_EVENTS = 1000
# A bounce fails the e-mail deliveries sent to the address this recently (older ones are history).
DELIVERY_LOOKBACK = timedelta(days=7)
MAX_ADDRESS_LENGTH = 254

Action = Literal["failed", "delayed", "complaint"]
STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
# Per-recipient actions that are not bounces (RFC 3464 §2.3.3): nothing to record.
NOT_BOUNCES = frozenset({"delivered", "relayed", "expanded"})
WEBHOOK_TYPES: Mapping[str, Action] = {
    "bounce": "failed",
    "permanent": "failed",
    "transient": "delayed",
    "complaint": "complaint",
}


class BounceParseError(ValueError):
    """The input is not a bounce report this endpoint understands; the message says why (for the sender)."""


@dataclass(frozen=True)
class Bounce:
    address: str  # lower-cased
    action: Action
    status: str  # "5.1.1", or "" when the report gave none
    diagnostic: str

    @property
    def gave_up(self) -> bool:
        """The message was not delivered and will not be: the e-mail delivery failed."""
        return self.action == "failed"

    @property
    def permanent(self) -> bool:
        """The address itself is bad. A failure with a 4.x.x status (a queue that expired) is not proof of that."""
        return self.gave_up and not self.status.startswith("4")


# --- parsing (pure) -----------------------------------------------------------------------------------------


def _address(raw: str) -> str | None:
    """`rfc822; Nobody@Example.com` or `<nobody@example.com>` -> `nobody@example.com`; None if not an address."""
    kind, sep, value = raw.partition(";")
    if sep:
        if kind.strip().lower() != "rfc822":
            return None
    else:
        value = kind
    value = value.strip().strip("<>").strip().lower()
    if not value or len(value) > MAX_ADDRESS_LENGTH:
        return None
    try:
        validate_email(value)
    except ValidationError:
        return None
    return value


def _status(raw: str) -> str:
    token = raw.strip().split(" ", 1)[0].split("(", 1)[0]
    return token if STATUS.match(token) else ""


def _short(text: str, limit: int = 200) -> str:
    # NUL and lone surrogates (a raw byte, an RFC 2047 word) cannot be stored in PostgreSQL text.
    return " ".join(_UNSTORABLE.sub(" ", text).split())[:limit]


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def dsn_parse(raw: bytes, *, max_bytes: int = MAX_REPORT_BYTES) -> list[Bounce]:
    """The failed and delayed recipients of an RFC 3464 delivery status notification (the whole message, headers
    and all; CRLF or LF; an mbox `From ` line is tolerated). Delivered/relayed/expanded recipients are left out.

    Raises BounceParseError for anything over `max_bytes`, anything that is not a multipart/report with
    report-type=delivery-status, and a report without a per-recipient part naming an rfc822 address."""
    if not raw:
        raise BounceParseError(_("The bounce report is empty."))
    if len(raw) > max_bytes:
        raise BounceParseError(_("The bounce report is larger than %(limit)d bytes.") % {"limit": max_bytes})
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        is_report = message.get_content_type() == "multipart/report"
        report_type = str(message.get_param("report-type", "") or "").lower() if is_report else ""
    except (email.errors.MessageError, ValueError, TypeError, IndexError, LookupError) as exc:
        raise BounceParseError(_("The bounce report is not a readable mail message.")) from exc
    if not is_report or report_type != "delivery-status":
        raise BounceParseError(
            _("Not a delivery status notification: expected multipart/report; report-type=delivery-status.")
        )
    status_part = next(
        (p for p in message.walk() if p.get_content_type() == "message/delivery-status"),
        None,
    )
    if status_part is None:
        raise BounceParseError(_("The report has no message/delivery-status part."))
    blocks = status_part.get_payload()
    # The email package splits message/delivery-status into header blocks: per-message fields, then one block
    # per recipient. Anything else (a part it could not split) has no per-recipient fields.
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise BounceParseError(_("The delivery status has no per-recipient fields."))
    bounces: list[Bounce] = []
    named_any = False
    for block in blocks[1:]:
        bounce = _recipient_block(block)
        if bounce is None:
            continue
        named_any = True
        if bounce.action in ("failed", "delayed"):
            action: Action = "failed" if bounce.action == "failed" else "delayed"
            bounces.append(Bounce(bounce.address, action, bounce.status, bounce.diagnostic))
    if not named_any:
        raise BounceParseError(_("The delivery status names no recipient address."))
    return bounces


@dataclass(frozen=True)
class _Recipient:
    address: str
    action: str
    status: str
    diagnostic: str


def _recipient_block(block: Any) -> _Recipient | None:
    if not isinstance(block, Message):
        return None
    try:
        final = str(block.get("Final-Recipient", "") or "")
        original = str(block.get("Original-Recipient", "") or "")
        action = str(block.get("Action", "") or "").strip().lower().split(" ", 1)[0]
        status = _status(str(block.get("Status", "") or ""))
        diagnostic = str(block.get("Diagnostic-Code", "") or "")
    except (email.errors.MessageError, ValueError, TypeError, IndexError, LookupError):
        return None
    address = _address(final) if final else None
    if address is None and original:
        address = _address(original)
    if address is None or action not in {"failed", "delayed", *NOT_BOUNCES}:
        return None
    # "smtp; 550 5.1.1 <x@y>: Recipient address rejected" -> the part after the diagnostic type.
    _, _, text = diagnostic.partition(";")
    return _Recipient(address, action, status, _short(text or diagnostic))


def webhook_parse(data: Any) -> list[Bounce]:
    """The events of the webhook shape in this module's docstring. Raises BounceParseError naming the first
    event that is not valid; nothing is taken from a body with any bad event."""
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise BounceParseError(_('Expected a JSON object with an "events" list.'))
    events = data["events"]
    if not events:
        raise BounceParseError(_('The "events" list is empty.'))
    if len(events) > WEBHOOK_MAX_EVENTS:
        raise BounceParseError(_("At most %(max)d events are accepted at once.") % {"max": WEBHOOK_MAX_EVENTS})
    bounces = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise BounceParseError(_("Event %(index)d is not an object.") % {"index": index})
        raw_address, kind = event.get("email"), event.get("type")
        address = _address(raw_address) if isinstance(raw_address, str) and ";" not in raw_address else None
        if address is None:
            raise BounceParseError(_("Event %(index)d has no valid e-mail address.") % {"index": index})
        if not isinstance(kind, str) or kind not in WEBHOOK_TYPES:
            raise BounceParseError(
                _("Event %(index)d: type must be bounce, permanent, transient or complaint.") % {"index": index}
            )
        raw_status, reason = event.get("status", ""), event.get("reason", "")
        if not isinstance(raw_status, str) or (raw_status and not STATUS.match(raw_status.strip())):
            raise BounceParseError(_("Event %(index)d: status must look like 5.1.1.") % {"index": index})
        if not isinstance(reason, str):
            raise BounceParseError(_("Event %(index)d: reason must be a string.") % {"index": index})
        status = raw_status.strip()
        action = WEBHOOK_TYPES[kind]
        if kind == "bounce" and status.startswith("4"):
            action = "delayed"
        bounces.append(Bounce(address, action, status, _short(reason)))
    return bounces


# --- recording ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BounceResult:
    recorded: int
    failing: list[str]  # the addresses of this report that are now failing, sorted
    deliveries_failed: int


def _delivery_error(bounce: Bounce, limit: int, *, private: bool = False) -> str:
    # A private contact's bounce says only its status: the server's words may name the address.
    text = " ".join(part for part in ("bounced:", bounce.status, "" if private else bounce.diagnostic) if part)
    return text[:limit]


@transaction.atomic
def bounce_record(*, bounces: Sequence[Bounce], source: BounceSource, now: datetime | None = None) -> BounceResult:
    """Count every bounce against its address, mark the permanently failing ones, and fail the e-mail
    deliveries sent in the last DELIVERY_LOOKBACK to people who use an address whose message was given up on
    (their e-mail or e-mail 2, case-insensitively), with the status and diagnostic in the delivery's error.

    A person with a second address that has not failed keeps the delivery as sent (that copy may have
    arrived); the bounce is still written to its error. One transaction; the address rows are locked."""
    from directory.models import PrivateContact, User
    from safety.models import Channel, Delivery, DeliveryState

    now = now or timezone.now()
    if not bounces:
        return BounceResult(0, [], 0)
    addresses = sorted({b.address for b in bounces})
    # Create the missing rows first (a concurrent report may create the same ones), then lock them in order.
    MailAddressState.objects.bulk_create(
        [MailAddressState(address=a) for a in addresses], ignore_conflicts=True, batch_size=500
    )
    states = {s.address: s for s in MailAddressState.objects.select_for_update().filter(address__in=addresses)}
    last_by_address: dict[str, Bounce] = {}
    for bounce in bounces:
        state = states[bounce.address]
        state.bounce_count += 1
        state.failing = state.failing or bounce.permanent
        state.last_status = bounce.status or bounce.action
        state.last_diagnostic = bounce.diagnostic[:200]
        state.last_bounce_at = now
        state.source = source
        state.updated_at = now
        if bounce.gave_up:
            last_by_address[bounce.address] = bounce
    MailAddressState.objects.bulk_update(
        states.values(),
        ["bounce_count", "failing", "last_status", "last_diagnostic", "last_bounce_at", "source", "updated_at"],
    )

    failed_rows = 0
    incidents: set[int] = set()
    if last_by_address:
        given_up = set(last_by_address)
        # Each person's addresses: work ones and confirmed private contacts (a copy to any of them may arrive).
        mine: dict[int, list[str]] = {}
        private: set[str] = set()
        for person_id, e1, e2 in (
            User.objects.annotate(e1=Lower("email"), e2=Lower("email2"))
            .filter(Q(e1__in=given_up) | Q(e2__in=given_up))
            .values_list("id", "e1", "e2")
        ):
            mine.setdefault(person_id, []).extend(a for a in (e1, e2) if a)
        private_rows = PrivateContact.objects.annotate(a=Lower("address")).filter(confirmed_at__isnull=False)
        hit = set(private_rows.filter(a__in=given_up).values_list("user_id", flat=True))
        for person_id, address in private_rows.filter(user_id__in=set(mine) | hit).values_list("user_id", "a"):
            mine.setdefault(person_id, []).append(address)
            private.add(address)
        for person_id, e1, e2 in (
            User.objects.filter(id__in=hit - set(mine)).annotate(e1=Lower("email"), e2=Lower("email2"))
        ).values_list("id", "e1", "e2"):
            mine.setdefault(person_id, []).extend(a for a in (e1, e2) if a)
        other_addresses = {a for addresses_ in mine.values() for a in addresses_ if a not in given_up}
        failing_elsewhere = set(
            MailAddressState.objects.filter(address__in=other_addresses, failing=True).values_list("address", flat=True)
        )
        error_limit = Delivery._meta.get_field("error").max_length or 200
        recent = Delivery.objects.filter(
            channel=Channel.EMAIL, state=DeliveryState.SENT, sent_at__gte=now - DELIVERY_LOOKBACK
        )
        for person_id, addresses_ in mine.items():
            bounced = next(a for a in addresses_ if a in given_up)
            error = _delivery_error(last_by_address[bounced], error_limit, private=bounced in private)
            all_down = all(a in given_up or a in failing_elsewhere for a in addresses_)
            rows = recent.filter(person_id=person_id)
            if all_down:
                incidents.update(rows.values_list("incident_id", flat=True))
                failed_rows += rows.update(state=DeliveryState.FAILED, error=error, updated_at=now)
            else:
                rows.update(error=error, updated_at=now)
    if incidents:  # their boards list the people nobody could reach: read them now
        from safety.board import board_touch

        def touch() -> None:
            for incident_id in sorted(incidents):
                board_touch(incident_id)

        transaction.on_commit(touch, robust=True)
    failing = sorted(a for a in addresses if states[a].failing)
    return BounceResult(recorded=len(bounces), failing=failing, deliveries_failed=failed_rows)


@transaction.atomic
def address_recovered(address: str, *, now: datetime | None = None) -> bool:
    """Clear `failing` for an address known to work again (a confirmed link, an administrator's check).
    The count and the last bounce stay as history. Returns whether the address was failing."""
    return bool(
        MailAddressState.objects.filter(address=address.strip().lower(), failing=True).update(
            failing=False, updated_at=now or timezone.now()
        )
    )
