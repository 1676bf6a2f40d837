"""Onboarding: invitation e-mails with a single-use "choose your password" link, accepting that link, and the
reads behind the invitation page and the printable sign-in sheet.

An invitation link is not a password-reset link: it has its own token salt and lives for INVITATION_DAYS,
whatever PASSWORD_RESET_TIMEOUT says. Both kinds stop working once the person has set a password or signed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.encoding import force_bytes
from django.utils.http import base36_to_int, urlsafe_base64_decode, urlsafe_base64_encode
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from consumers.mail import mail_for_people
from directory.models import Department, Organization, Role, User
from directory.selectors import department_subtree_ids
from directory.services import _queue_mail, password_change

INVITATION_DAYS = 7
# One request may name a whole company's people, but not an unbounded list.
MAX_INVITATIONS = 10_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvitationTokenGenerator(PasswordResetTokenGenerator):
    """The password-reset token with its own salt and a life of INVITATION_DAYS.

    The hashed state (password, last sign-in, e-mail, and here also `invited_at`) changes when the link is
    used, when the person signs in, and when a newer invitation is sent, so each of those retires the link."""

    key_salt = "directory.onboarding.InvitationTokenGenerator"
    timeout = INVITATION_DAYS * 24 * 3600

    def _make_hash_value(self, user: User, timestamp: int) -> str:
        # Whole microseconds since the epoch, exactly (a float timestamp would round), so that an invitation
        # sent a moment after another one still changes the token.
        invited = "" if user.invited_at is None else str((user.invited_at - EPOCH) // timedelta(microseconds=1))
        return f"{super()._make_hash_value(user, timestamp)}/{invited}"

    def check_token(self, user: User | None, token: str | None) -> bool:
        # Django's own check reads settings.PASSWORD_RESET_TIMEOUT; this one uses `timeout`.
        if not (user and token):
            return False
        try:
            ts_b36, _hash = token.split("-")
            ts = base36_to_int(ts_b36)
        except ValueError:
            return False
        if not any(
            constant_time_compare(self._make_token_with_timestamp(user, ts, secret), token)
            for secret in [self.secret, *self.secret_fallbacks]
        ):
            return False
        age = self._num_seconds(self._now()) - ts
        return 0 <= age <= self.timeout


invitation_token_generator = InvitationTokenGenerator()


def sign_in_url(*, organization: Organization, login_id: str | None = None) -> str:
    """The organisation's sign-in page; with a login ID, the page opens with it filled in."""
    url = f"{settings.SITE_URL}/{organization.slug}/"
    return f"{url}?{urlencode({'login_id': login_id})}" if login_id else url


def invitation_link(*, user: User) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = invitation_token_generator.make_token(user)
    return f"{settings.SITE_URL}/{user.organization.slug}/welcome/{uid}/{token}/"


@dataclass(frozen=True)
class InvitationResult:
    invited: int
    # Login IDs of people who have no e-mail address, so got nothing (hand them a printed sheet instead).
    without_email: list[str] = field(default_factory=list)
    # Login IDs of deactivated people among those asked for; they are never invited.
    inactive: list[str] = field(default_factory=list)


@transaction.atomic
def people_invite(*, organization: Organization, actor: User, user_ids: Sequence[int]) -> InvitationResult:
    """E-mail each active person among `user_ids` their sign-in URL, their login ID and a single-use link to
    choose a password, which expires in INVITATION_DAYS days; a later invitation replaces the link. Sets
    `invited_at` of everyone e-mailed.

    The mail goes after commit as one batch (one SMTP connection), each message in its reader's language.
    People without an e-mail address are returned in `without_email` and deactivated people in `inactive`;
    neither is an error. Raises Http404 if any id is not a person of this organisation (nothing is sent), and
    ApplicationError unless `actor` is a system administrator of the organisation."""
    if actor.organization_id != organization.id or not actor.has_role(Role.SYSTEM_ADMIN):
        raise ApplicationError(_("Only a system administrator can send invitations."), code="forbidden", status=403)
    ids = set(user_ids)
    if len(ids) > MAX_INVITATIONS:
        raise ApplicationError(
            _("Invite at most %(max)d people at a time.") % {"max": MAX_INVITATIONS}, code="too_many_people"
        )
    people = list(User.objects.filter(organization=organization, id__in=ids).select_related("organization"))
    if len(people) != len(ids):
        raise Http404  # someone else's people, or nobody: say nothing about which
    inactive = sorted(p.login_id for p in people if not p.is_active)
    active = [p for p in people if p.is_active]
    reachable = [p for p in active if p.email or p.email2]
    without_email = sorted(p.login_id for p in active if not (p.email or p.email2))
    now = timezone.now()
    User.objects.filter(id__in=[p.id for p in reachable]).update(invited_at=now)
    for person in reachable:
        person.invited_at = now  # the token hashes it, so it must match what the database now holds

    def render(person: User) -> tuple[str, str]:
        subject = _("[%(org)s] Welcome: choose your password") % {"org": organization.name}
        body = _(
            "%(name)s,\n\nYou have been invited to %(org)s.\n\nSign-in URL: %(url)s\nYour login ID: %(login)s\n\n"
            "First open this link to choose your password. It works once and expires in %(days)s days.\n\n"
            "%(link)s\n\nAfterwards, sign in at the sign-in URL with your login ID and that password.\n"
        ) % {
            "name": person.display_name,
            "org": organization.name,
            "url": sign_in_url(organization=organization),
            "login": person.login_id,
            "days": INVITATION_DAYS,
            "link": invitation_link(user=person),
        }
        return subject, body

    _queue_mail(mail_for_people(reachable, render))
    return InvitationResult(invited=len(reachable), without_email=without_email, inactive=inactive)


def invitation_user(*, organization: Organization, uidb64: str, token: str) -> User | None:
    """The active person of this organisation whose invitation link this is, if it is still good."""
    try:
        pk = int(urlsafe_base64_decode(uidb64).decode())
    except (ValueError, UnicodeDecodeError):
        return None
    user = User.objects.filter(organization=organization, pk=pk, is_active=True).first()
    if user is None or not invitation_token_generator.check_token(user, token):
        return None
    return user


@transaction.atomic
def invitation_accept(*, organization: Organization, uidb64: str, token: str, new_password: str) -> User:
    """Use an invitation link: check it (single use, expires), then set the person's own password, checked as
    `password_change` checks it. Two tabs posting the same link at once: the second finds it used."""
    user = invitation_user(organization=organization, uidb64=uidb64, token=token)
    if user is not None:
        user = User.objects.select_for_update().filter(pk=user.pk).first()
    if user is None or not invitation_token_generator.check_token(user, token):
        raise ApplicationError(
            _("This invitation link is invalid, has expired or has already been used."), code="bad_invitation"
        )
    return password_change(user=user, new_password=new_password)


# --- Reads for the invitation page and the sign-in sheet ------------------------------------------------


def access_department(*, organization: Organization, department_id: int) -> Department:
    """The department with this id in this organisation; Http404 for anything else."""
    department = Department.objects.filter(organization=organization, id=department_id).first()
    if department is None:
        raise Http404
    return department


def department_people(
    *, department: Department, include_subdepartments: bool = False, never_signed_in: bool = False
) -> list[User]:
    """Active people of the department (and of every department below it), in department order, then by
    reading; optionally only those who have never signed in."""
    ids = department_subtree_ids(department=department) if include_subdepartments else {department.id}
    people = User.objects.filter(organization_id=department.organization_id, department_id__in=ids, is_active=True)
    if never_signed_in:
        people = people.filter(last_login__isnull=True)
    return list(
        people.select_related("department").order_by(
            "department__sort_order", "department__code", "last_name_kana", "first_name_kana", "login_id"
        )
    )


@dataclass(frozen=True)
class DepartmentRow:
    id: int
    code: str
    name: str
    depth: int
    has_children: bool
    people: int
    never_signed_in: int
    without_email: int
    invited: int


def onboarding_overview(*, organization: Organization) -> list[DepartmentRow]:
    """Every department in tree order, with how many active people it has, how many of them have never signed
    in, have no e-mail address, or were invited. One query."""
    active = Q(members__is_active=True)
    rows = list(
        Department.objects.filter(organization=organization)
        .annotate(
            n_people=Count("members", filter=active),
            n_never=Count("members", filter=active & Q(members__last_login__isnull=True)),
            n_no_email=Count("members", filter=active & Q(members__email="", members__email2="")),
            n_invited=Count("members", filter=active & Q(members__invited_at__isnull=False)),
        )
        .order_by("sort_order", "code")
        .values("id", "code", "name", "parent_id", "n_people", "n_never", "n_no_email", "n_invited")
    )
    children: dict[int | None, list[Any]] = {}
    known = {row["id"] for row in rows}
    for row in rows:
        parent = row["parent_id"] if row["parent_id"] in known else None
        children.setdefault(parent, []).append(row)
    ordered: list[DepartmentRow] = []
    seen: set[int] = set()

    def walk(parent: int | None, depth: int) -> None:
        for row in children.get(parent, []):
            row_id: int = row["id"]
            if row_id in seen:  # a cycle would be a bug elsewhere; never loop on it here
                continue
            seen.add(row_id)
            ordered.append(
                DepartmentRow(
                    id=row_id,
                    code=row["code"],
                    name=row["name"],
                    depth=depth,
                    has_children=bool(children.get(row_id)),
                    people=row["n_people"],
                    never_signed_in=row["n_never"],
                    without_email=row["n_no_email"],
                    invited=row["n_invited"],
                )
            )
            walk(row_id, depth + 1)

    walk(None, 0)
    return ordered
