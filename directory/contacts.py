"""Private contacts: up to MAX_PRIVATE_CONTACTS e-mail addresses a person adds for safety notifications.

An address is used only once confirmed through the link mailed to it. Only the person sees it: nothing an
administrator reads (pages, APIs, exports, logs, delivery errors) names it. So this module logs ids only, the
mails it sends mark the address private (`MailMessage.private`: redacted from mail errors and logs), and the
confirmation token carries a keyed digest of the address, not the address (a signed token is only base64: a
link in an access log would otherwise show it).

Services (`private_contact_add`, `_resend`, `_remove`, `_confirm`) check ownership themselves: someone else's
contact is Http404, exactly like one that does not exist."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.db.models.functions import Lower
from django.http import Http404
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from config.throttle import throttle_allow
from consumers.mail import MailMessage
from directory.models import MAX_PRIVATE_CONTACTS, PrivateContact, User

logger = logging.getLogger(__name__)

SALT = "directory.private-contact-confirm"
MAX_ADDRESS_LENGTH = 254
# Confirmation mails (adding or resending) one person may cause per hour: the form must not flood an inbox.
MAILS_PER_HOUR = 5

__all__ = [
    "MAX_PRIVATE_CONTACTS",
    "ContactError",
    "ContactRow",
    "ContactState",
    "confirm_path",
    "confirmed_private_addresses",
    "private_contact_add",
    "private_contact_check",
    "private_contact_confirm",
    "private_contact_list",
    "private_contact_remove",
    "private_contact_resend",
    "private_contact_token",
]


class ContactError(StrEnum):
    """The stable codes of the errors below (the API's `code`)."""

    BAD_ADDRESS = "contact_bad_address"
    WORK_ADDRESS = "contact_work_address"
    DUPLICATE = "contact_duplicate"
    LIMIT = "contact_limit"
    ALREADY_CONFIRMED = "contact_already_confirmed"
    TOO_MANY_MAILS = "contact_too_many_mails"
    LINK_INVALID = "contact_link_invalid"
    LINK_EXPIRED = "contact_link_expired"


class ContactState(StrEnum):
    PENDING = "pending"  # 確認待ち: the link was mailed, not followed yet
    CONFIRMED = "confirmed"  # 確認済み: safety notifications go to it
    FAILING = "failing"  # 配信エラー: a bounce report says the mailbox does not take mail


@dataclass(frozen=True)
class ContactRow:
    """One of the person's own contacts as their profile and their API show it. Its repr leaves the address out:
    a page's context is written to Django's DEBUG log when a template variable is missing."""

    id: int
    address: str = field(repr=False)
    state: ContactState
    confirmed: bool
    confirmed_at: datetime | None
    confirmation_sent_at: datetime | None
    created_at: datetime


# --- reads --------------------------------------------------------------------------------------------------


def confirmed_private_addresses(person_ids: Iterable[int]) -> dict[int, list[str]]:
    """person id -> their confirmed private addresses, oldest first."""
    found: dict[int, list[str]] = {}
    rows = (
        PrivateContact.objects.filter(user_id__in=list(person_ids), confirmed_at__isnull=False)
        .order_by("created_at", "id")
        .values_list("user_id", "address")
    )
    for user_id, address in rows:
        found.setdefault(user_id, []).append(address)
    return found


def private_contact_list(*, user: User) -> list[ContactRow]:
    """The person's own contacts, oldest first, each with its state (a failing mailbox wins over the rest).
    Two queries."""
    from consumers.models import MailAddressState

    contacts = list(PrivateContact.objects.filter(user_id=user.id).order_by("created_at", "id"))
    failing = set(
        MailAddressState.objects.filter(address__in=[c.address.lower() for c in contacts], failing=True).values_list(
            "address", flat=True
        )
    )
    return [_row(c, failing=c.address.lower() in failing) for c in contacts]


def _row(contact: PrivateContact, *, failing: bool) -> ContactRow:
    confirmed = contact.confirmed_at is not None
    state = ContactState.FAILING if failing else ContactState.CONFIRMED if confirmed else ContactState.PENDING
    return ContactRow(
        id=contact.id,
        address=contact.address,
        state=state,
        confirmed=confirmed,
        confirmed_at=contact.confirmed_at,
        confirmation_sent_at=contact.confirmation_sent_at,
        created_at=contact.created_at,
    )


def _own(user: User, contact_id: int, *, lock: bool = False) -> PrivateContact:
    """The person's own contact; Http404 for another person's, as for one that does not exist."""
    contacts = PrivateContact.objects.filter(id=contact_id, user_id=user.id)
    contact = (contacts.select_for_update() if lock else contacts).first()
    if contact is None:
        raise Http404
    return contact


# --- adding, resending, removing ----------------------------------------------------------------------------


def address_normalize(raw: str) -> str:
    """`raw` stripped, with its domain lower-cased (the local part is the mailbox's to interpret); raises
    ApplicationError for anything EmailValidator refuses or longer than MAX_ADDRESS_LENGTH."""
    address = raw.strip() if isinstance(raw, str) else ""
    local, at, domain = address.rpartition("@")
    address = f"{local}@{domain.lower()}" if at else address
    try:
        if not at or len(address) > MAX_ADDRESS_LENGTH:
            raise ValidationError("bad")
        EmailValidator(allowlist=[])(address)  # no name@localhost
    except ValidationError:
        raise ApplicationError(
            _("Enter a valid e-mail address, like name@example.com."), code=ContactError.BAD_ADDRESS
        ) from None
    return address


@transaction.atomic
def private_contact_add(*, user: User, address: str) -> PrivateContact:
    """Add a private address for the person and mail the confirmation link to it (to it only, after commit, in
    the person's language). Refuses a malformed address, the person's own work address, one they already
    added, a fourth one, and more than MAILS_PER_HOUR confirmation mails an hour; nothing changes then."""
    address = address_normalize(address)
    # The person's row is the lock: two adds at once cannot both pass the limit.
    person = User.objects.select_for_update().select_related("organization").get(id=user.id)
    if address.lower() in {a.lower() for a in (person.email, person.email2) if a}:
        raise ApplicationError(
            _("This is your work address; notifications already go to it. Add a private one."),
            code=ContactError.WORK_ADDRESS,
        )
    existing = list(
        PrivateContact.objects.filter(user=person).annotate(lower=Lower("address")).values_list("lower", flat=True)
    )
    if address.lower() in existing:
        raise ApplicationError(_("You have already added this address."), code=ContactError.DUPLICATE)
    if len(existing) >= MAX_PRIVATE_CONTACTS:
        raise ApplicationError(
            _("You can add at most %(max)d private addresses. Remove one first.") % {"max": MAX_PRIVATE_CONTACTS},
            code=ContactError.LIMIT,
        )
    _mail_allowed(person)
    contact = PrivateContact.objects.create(user=person, address=address, confirmation_sent_at=timezone.now())
    _confirmation_mail_on_commit(contact, person)
    logger.info("person %s added private contact %s", person.id, contact.id)
    return contact


@transaction.atomic
def private_contact_resend(*, user: User, contact_id: int) -> PrivateContact:
    """Mail a new confirmation link for the person's own unconfirmed contact (Http404 for anyone else's)."""
    person = User.objects.select_for_update().select_related("organization").get(id=user.id)
    contact = _own(person, contact_id, lock=True)
    if contact.confirmed_at is not None:
        raise ApplicationError(_("This address is already confirmed."), code=ContactError.ALREADY_CONFIRMED)
    _mail_allowed(person)
    contact.confirmation_sent_at = timezone.now()
    contact.save(update_fields=["confirmation_sent_at"])
    _confirmation_mail_on_commit(contact, person)
    return contact


@transaction.atomic
def private_contact_remove(*, user: User, contact_id: int) -> None:
    """Remove the person's own contact (Http404 for anyone else's). Its links stop working."""
    _own(user, contact_id, lock=True).delete()
    logger.info("person %s removed private contact %s", user.id, contact_id)


def _mail_allowed(person: User) -> None:
    if not throttle_allow(f"private-contact-mail:{person.id}", limit=MAILS_PER_HOUR, window_seconds=3600):
        raise ApplicationError(
            _("Too many confirmation mails were sent. Try again in an hour."),
            code=ContactError.TOO_MANY_MAILS,
            status=429,
        )


# --- the confirmation link ----------------------------------------------------------------------------------


def _digest(address: str) -> str:
    return salted_hmac(SALT, address, algorithm="sha256").hexdigest()[:32]


def private_contact_token(contact: PrivateContact) -> str:
    """Signed [contact id, keyed digest of its address] with its own salt and a timestamp: a contact removed or
    an address changed since makes the link invalid, and the link never shows the address."""
    return signing.dumps([contact.id, _digest(contact.address)], salt=SALT, compress=False)


def confirm_path(*, slug: str, token: str) -> str:
    return f"/{slug}/contacts/confirm/{token}/"


def private_contact_check(*, token: str, organization_id: int) -> PrivateContact:
    """The contact a confirmation link stands for (read only: following a link with GET confirms nothing, as
    mail scanners fetch links). ApplicationError `contact_link_expired` (410) after
    PRIVATE_CONTACT_CONFIRM_SECONDS, `contact_link_invalid` (404) for anything else that is not a live link of
    this organisation."""
    return _link_contact(token, organization_id=organization_id, lock=False)


@transaction.atomic
def private_contact_confirm(*, token: str, organization_id: int) -> PrivateContact:
    """Confirm the contact of a link (again: nothing changes), and clear a failing mark on its address: the
    link arrived. Same errors as private_contact_check."""
    from consumers.bounces import address_recovered

    contact = _link_contact(token, organization_id=organization_id, lock=True)
    if contact.confirmed_at is None:
        contact.confirmed_at = timezone.now()
        contact.save(update_fields=["confirmed_at"])
        address_recovered(contact.address)
        logger.info("private contact %s confirmed", contact.id)
    return contact


def _link_contact(token: str, *, organization_id: int, lock: bool) -> PrivateContact:
    invalid = ApplicationError(
        _("This confirmation link is not valid. The address may have been removed, or the link is incomplete."),
        code=ContactError.LINK_INVALID,
        status=404,
    )
    if not isinstance(token, str) or not 10 < len(token) < 300:
        raise invalid
    try:
        value = signing.loads(token, salt=SALT, max_age=settings.PRIVATE_CONTACT_CONFIRM_SECONDS)
    except signing.SignatureExpired:
        raise ApplicationError(
            _("This confirmation link has expired. Send a new one from your profile."),
            code=ContactError.LINK_EXPIRED,
            status=410,
        ) from None
    except (signing.BadSignature, ValueError):
        raise invalid from None
    if not (isinstance(value, list) and len(value) == 2 and type(value[0]) is int and isinstance(value[1], str)):
        raise invalid
    contacts = PrivateContact.objects.filter(
        id=value[0], user__organization_id=organization_id, user__is_active=True
    ).select_related("user", "user__organization")
    contact = (contacts.select_for_update(of=("self",)) if lock else contacts).first()
    if contact is None or not constant_time_compare(_digest(contact.address), value[1]):
        raise invalid
    return contact


def _confirmation_mail(contact: PrivateContact, person: User) -> MailMessage:
    token = private_contact_token(contact)
    link = settings.SITE_URL + confirm_path(slug=person.organization.slug, token=token)
    expires = timezone.localtime(timezone.now() + timedelta(seconds=settings.PRIVATE_CONTACT_CONFIRM_SECONDS))
    with translation.override(person.language or settings.LANGUAGE_CODE):
        subject = _("Confirm your address for safety notifications")
        body = "\n".join(
            [
                _("%(name)s,") % {"name": person.display_name},
                "",
                _("You added this address in %(org)s to receive safety notifications (安否確認).")
                % {"org": person.organization.name},
                _("Open the link below and press “Confirm this address” to start receiving them:"),
                link,
                "",
                _("The link works until %(until)s.") % {"until": expires.strftime("%Y-%m-%d %H:%M")},
                _("If you did not add this address, ignore this mail: nothing more will be sent to it."),
                f"-- {person.organization.name}",
            ]
        )
    return MailMessage(
        to=[contact.address], subject=subject, body=body, language=person.language, private=(contact.address,)
    )


def _confirmation_mail_on_commit(contact: PrivateContact, person: User) -> None:
    from consumers.tasks import mail_send

    payload = [_confirmation_mail(contact, person).as_dict()]
    transaction.on_commit(lambda: mail_send.delay(payload), robust=True)
