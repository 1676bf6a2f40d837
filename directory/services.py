"""Writes for organisations, people and notices. Each is a service with its contract in the docstring."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.validators import validate_email
from django.db import transaction
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from consumers.mail import MailMessage, mail_for_people
from consumers.publisher import publish_on_commit, push_request
from directory.events import NOTICE_POSTED, notice_data, org_group
from directory.models import RESERVED_SLUGS, SLUG_RE, Department, Notice, Organization, Role, RoleAssignment, User


def one_time_password() -> str:
    # 16 characters from an alphabet without look-alikes, easy to type from a printed hand-over sheet.
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))


@dataclass(frozen=True)
class CreatedOrganization:
    organization: Organization
    admin: User
    password: str


@transaction.atomic
def organization_create(
    *, slug: str, name: str, admin_email: str, admin_login_id: str | None = None
) -> CreatedOrganization:
    """Create an organisation and its first system administrator with a one-time password.

    The administrator must choose their own password at first sign-in."""
    slug = slug.strip().lower()
    if not SLUG_RE.match(slug) or slug in RESERVED_SLUGS:
        raise ApplicationError(
            f"'{slug}' cannot be an organisation ID: use 1-50 lower-case letters, digits and hyphens.",
            code="bad_slug",
        )
    if Organization.objects.filter(slug=slug).exists():
        raise ApplicationError(f"The organisation ID '{slug}' is taken.", code="slug_taken")
    if not name.strip() or len(name) > 100:
        raise ApplicationError("The organisation name is required (at most 100 characters).", code="bad_name")
    try:
        validate_email(admin_email)
    except ValidationError:
        raise ApplicationError(f"'{admin_email}' is not a valid e-mail address.", code="bad_email") from None
    organization = Organization.objects.create(slug=slug, name=name.strip())
    password = one_time_password()
    admin = User.objects.create_user(
        organization=organization,
        login_id=admin_login_id or admin_email,
        password=password,
        last_name=_("Administrator"),
        email=admin_email,
        must_change_password=True,
    )
    RoleAssignment.objects.create(user=admin, role=Role.SYSTEM_ADMIN)
    from safety.autodispatch import preset_rule_create

    preset_rule_create(organization)  # 震度5強 or more reaches the people based there, before the first sign-in
    return CreatedOrganization(organization=organization, admin=admin, password=password)


_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.\-]*:[A-Za-z0-9/?=&%._~:+\-]*$")
_FORBIDDEN_SCHEMES = ("javascript", "data", "vbscript", "file", "http", "https", "blob", "about", "ftp")


def phone_scheme_validate(value: str) -> str:
    """A phone link prefix: `tel:` or an app's scheme such as `com050voipbiz://keypad?tel=` or `sip:`.

    The number's digits are appended to it. Schemes that run code or open web pages are refused."""
    value = unicodedata.normalize("NFKC", value).strip()  # full-width input from a Japanese keyboard
    scheme = value.split(":", 1)[0].lower()
    if not value or len(value) > 100 or not _SCHEME_RE.match(value) or scheme in _FORBIDDEN_SCHEMES:
        raise ApplicationError(
            _("The phone link must be tel: or an app's scheme such as com050voipbiz://keypad?tel= ."),
            code="bad_phone_scheme",
        )
    return value


@transaction.atomic
def organization_settings_update(
    *,
    organization: Organization,
    name: str | None = None,
    logo: UploadedFile[bytes] | None = None,
    remove_logo: bool = False,
    phone_url_scheme: str | None = None,
) -> Organization:
    """Change the organisation's display name, logo (PNG, JPEG or WebP up to LOGO_MAX_BYTES) and the
    prefix of phone links on directory cards."""
    if phone_url_scheme is not None:
        organization.phone_url_scheme = phone_scheme_validate(phone_url_scheme)
    if name is not None:
        name = name.strip()
        if not name or len(name) > 100:
            raise ApplicationError(_("The organisation name is required (at most 100 characters)."), code="bad_name")
        organization.name = name
    if remove_logo and organization.logo:
        organization.logo.delete(save=False)
        organization.logo_content_type = ""
    if logo is not None:
        if logo.size is None or logo.size > settings.LOGO_MAX_BYTES:
            raise ApplicationError(_("The logo must be at most 512 KB."), code="logo_too_large")
        head = logo.read(16)
        logo.seek(0)
        content_type = _image_type(head)
        if content_type is None:
            raise ApplicationError(_("The logo must be a PNG, JPEG or WebP image."), code="logo_bad_type")
        if organization.logo:
            organization.logo.delete(save=False)
        organization.logo.save(logo.name or "logo", logo, save=False)
        organization.logo_content_type = content_type
    organization.save()
    return organization


def _image_type(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def password_change(*, user: User, new_password: str) -> User:
    """Set the person's own password, checked against the validators; clears `must_change_password`.

    Callers confirm the current password through `directory.auth.password_confirm`, so wrong guesses count
    towards the lockout."""
    if user.check_password(new_password):
        raise ApplicationError(_("Choose a password different from the current one."), code="same_password")
    try:
        validate_password(new_password, user)
    except ValidationError as exc:
        raise ApplicationError(" ".join(exc.messages), code="weak_password") from None
    user.set_password(new_password)
    user.must_change_password = False
    user.save(update_fields=["password", "must_change_password"])
    return user


def password_reset_request(*, organization: Organization, login_id: str) -> None:
    """E-mail a single-use, expiring reset link to the person with this login ID, if they have an address.

    Says nothing about whether the person exists."""
    user = User.objects.filter(organization=organization, login_id=login_id.strip(), is_active=True).first()
    if user is None or not (user.email or user.email2):
        return
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    link = f"{settings.SITE_URL}/{organization.slug}/password/reset/{uid}/{token}/"
    hours = settings.PASSWORD_RESET_TIMEOUT // 3600 or 1

    def render(person: User) -> tuple[str, str]:
        subject = _("[%(org)s] Reset your password") % {"org": organization.name}
        body = _(
            "%(name)s,\n\nOpen this link to choose a new password. It works once and expires in %(hours)s hour(s).\n\n"
            "%(link)s\n\nIf you did not ask for this, ignore this message; your password has not changed.\n"
        ) % {"name": person.display_name, "link": link, "hours": hours}
        return subject, body

    _queue_mail(mail_for_people([user], render))


def password_reset_confirm(*, organization: Organization, uidb64: str, token: str, new_password: str) -> User:
    """Use a reset link: the token is checked (single use, expires), then the new password is set."""
    user = password_reset_user(organization=organization, uidb64=uidb64, token=token)
    if user is None:
        raise ApplicationError(_("This reset link is invalid or has already been used."), code="bad_token")
    return password_change(user=user, new_password=new_password)


def password_reset_user(*, organization: Organization, uidb64: str, token: str) -> User | None:
    try:
        pk = int(urlsafe_base64_decode(uidb64).decode())
    except (ValueError, UnicodeDecodeError):
        return None
    user = User.objects.filter(organization=organization, pk=pk, is_active=True).first()
    if user is None or not default_token_generator.check_token(user, token):
        return None
    return user


def organization_links_send(*, address: str) -> None:
    """E-mail the sign-in URL of each organisation where this address belongs to a person. Silent otherwise."""
    people = _people_with_address(address)
    if not people:
        return

    def render(person: User) -> tuple[str, str]:
        subject = _("Your sign-in URL")
        body = _("%(name)s,\n\nSign in to %(org)s here:\n%(link)s\n\nYour login ID: %(login)s\n") % {
            "name": person.display_name,
            "org": person.organization.name,
            "link": f"{settings.SITE_URL}/{person.organization.slug}/",
            "login": person.login_id,
        }
        return subject, body

    messages = mail_for_people(people, render)
    for message in messages:  # only to the address that asked, never to a person's other address
        object.__setattr__(message, "to", [address.strip()])
    _queue_mail(messages)


def _people_with_address(address: str) -> list[User]:
    from directory.selectors import users_with_email

    return users_with_email(address=address)


def _queue_mail(messages: Iterable[MailMessage]) -> None:
    from consumers.tasks import mail_send

    payload = [m.as_dict() for m in messages]
    if payload:
        transaction.on_commit(lambda: mail_send.delay(payload), robust=True)


@transaction.atomic
def notice_post(*, author: User, title: str, body: str = "", push: bool = True) -> Notice:
    """Post an organisation-wide notice. After commit it streams to every open page of the organisation,
    and people get a web push."""
    title, body = title.strip(), body.strip()
    if not title or len(title) > 200:
        raise ApplicationError(_("A title is required (at most 200 characters)."), code="bad_title")
    if len(body) > 5000:
        raise ApplicationError(_("The text is at most 5,000 characters."), code="bad_body")
    notice = Notice.objects.create(organization=author.organization, author=author, title=title, body=body)
    recipients = (
        User.objects.filter(organization=author.organization, is_active=True)
        .exclude(id=author.id)
        .values_list("id", flat=True)
        if push
        else []
    )
    publish_on_commit(
        org_group(author.organization_id),
        NOTICE_POSTED,
        notice_data(notice),
        push=push_request(
            recipients,
            title=title,
            body=body.split("\n", 1)[0][:120],
            url=f"/{author.organization.slug}/home/",
            tag=f"notice-{notice.id}",
        )
        if push
        else None,
    )
    return notice


@transaction.atomic
def user_language_set(*, user: User, language: str) -> User:
    if language not in dict(settings.LANGUAGES):
        raise ApplicationError(_("Unknown language."), code="bad_language")
    user.language = language
    user.save(update_fields=["language"])
    return user


DEMO_DEPARTMENTS = [
    ("HQ", "本社", "ホンシャ", None),
    ("SALES", "営業部", "エイギョウブ", "HQ"),
    ("SALES-OSAKA", "大阪営業所", "オオサカエイギョウショ", "SALES"),
    ("DEV", "開発部", "カイハツブ", "HQ"),
    ("ADMIN", "総務部", "ソウムブ", "HQ"),
]
# login_id, last, first, last kana, first kana, department, region, roles, language
DEMO_PEOPLE = [
    ("admin", "管理", "太郎", "カンリ", "タロウ", "ADMIN", "13", list(Role), "ja"),
    ("sato", "佐藤", "花子", "サトウ", "ハナコ", "SALES", "13", [Role.MANAGER], "ja"),
    ("suzuki", "鈴木", "一郎", "スズキ", "イチロウ", "SALES-OSAKA", "27", [Role.DEPARTMENT_MANAGER], "ja"),
    ("takahashi", "髙橋", "健", "タカハシ", "ケン", "DEV", "13", [Role.ADMIN_GOTALK], "ja"),
    ("tanaka", "田中", "美咲", "タナカ", "ミサキ", "DEV", "14", [], "ja"),
    ("smith", "Smith", "Alex", "スミス", "アレックス", "SALES-OSAKA", "27", [], "en"),
    ("ito", "伊藤", "翔", "イトウ", "ショウ", "ADMIN", "11", [Role.ADMIN_ANPI], "ja"),
]


@transaction.atomic
def demo_seed(*, password: str, sample_dir: Path | None = None) -> Organization:
    """Create (or refresh) the demo organisation `demo`. Idempotent.

    With the sample TSV files (`sample_dir`), its directory comes from them through the importer, plus an
    `admin` with every role; without them, from a small built-in set."""
    organization, _created = Organization.objects.get_or_create(slug="demo", defaults={"name": "デモ株式会社"})
    if sample_dir is not None:
        return _demo_from_samples(organization, password, sample_dir)
    codes: dict[str, Department] = {}
    for order, (code, name, kana, parent) in enumerate(DEMO_DEPARTMENTS):
        codes[code], _c = Department.objects.update_or_create(
            organization=organization,
            code=code,
            defaults={
                "name": name,
                "name_kana": kana,
                "parent": codes.get(parent) if parent else None,
                "sort_order": order,
            },
        )
    _demo_people(organization, password, codes)
    return organization


def _demo_people(
    organization: Organization, password: str, codes: dict[str, Department], only: str | None = None
) -> None:
    for index, (login, last, first, last_kana, first_kana, dept, region, roles, language) in enumerate(DEMO_PEOPLE):
        if dept not in codes or (only and login != only):
            continue
        user = User.objects.filter(organization=organization, login_id=login).first()
        if user is None:
            user = User.objects.create_user(
                organization=organization,
                login_id=login,
                password=password,
                last_name=last,
                first_name=first,
                last_name_kana=last_kana,
                first_name_kana=first_kana,
                department=codes[dept],
                region_code=region,
                email=f"{login}@demo.example",
                phone_number=f"03-5555-{1000 + index}",
                talk_available=True,
                anpi_login_id=login,
                language=language,
            )
        for role in roles:
            RoleAssignment.objects.get_or_create(user=user, role=role)


def _demo_from_samples(organization: Organization, password: str, sample_dir: Path) -> Organization:
    from directory.importer import import_apply

    departments = sorted(sample_dir.glob("Sample_export_department_data_*.tsv"))
    users = sorted(sample_dir.glob("Sample_export_user_data_*.tsv"))
    if not departments or not users:
        raise ApplicationError(f"No sample files in {sample_dir}", code="no_samples")
    plan = import_apply(
        organization=organization, departments_raw=departments[-1].read_bytes(), users_raw=users[-1].read_bytes()
    )
    if plan.faults:
        raise ApplicationError(f"The sample files did not import: {plan.faults[0].message}", code="bad_samples")
    home = Department.objects.filter(organization=organization).order_by("sort_order", "code").first()
    _demo_people(organization, password, {"ADMIN": home} if home else {}, only="admin")
    return organization
