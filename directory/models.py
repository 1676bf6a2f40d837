"""Organisations (tenants), departments, people and their roles.

Every row that belongs to a customer hangs off an Organisation; login IDs are unique within one, not across
the site.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$")
# Paths at the site's root that can never be an organisation's slug.
RESERVED_SLUGS = frozenset(
    {"static", "media", "api", "ws", "admin", "healthz", "sw.js", "manifest.webmanifest", "find", "i18n", "help"}
)


class Role(models.TextChoices):
    """Roles within one organisation; the values are the PRIVILEGES names of the directory TSV."""

    SYSTEM_ADMIN = "SYSTEM_ADMIN", _("System administrator")
    CRISIS_MANAGER = "CRISIS_MANAGER", _("Crisis manager")
    MANAGER = "MANAGER", _("Manager")
    DEPARTMENT_MANAGER = "DEPARTMENT_MANAGER", _("Department manager")
    ADMIN_GOTALK = "ADMIN_GOTALK", _("Talk administrator")
    ADMIN_ANPI = "ADMIN_ANPI", _("Safety administrator")


class Language(models.TextChoices):
    JA = "ja", "日本語"
    EN = "en", "English"


def logo_upload_to(instance: Organization, filename: str) -> str:
    return f"logos/{instance.slug}/{timezone.now():%Y%m%d%H%M%S}-{filename[-40:]}"


class Organization(models.Model):
    slug = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(SLUG_RE, _("Lower-case letters, digits and hyphens only."))],
    )
    name = models.CharField(max_length=100)
    logo = models.FileField(upload_to=logo_upload_to, blank=True)
    logo_content_type = models.CharField(max_length=50, blank=True)
    # Licence limits: active people, active talk users, active safety-confirmation users (ANPI_LOGIN_ID set).
    max_people = models.PositiveIntegerField(default=1000)
    max_talk_users = models.PositiveIntegerField(default=1000)
    max_safety_users = models.PositiveIntegerField(default=1000)
    # Phone links on cards: "tel:" or e.g. a softphone's "com050voipbiz://keypad?tel=".
    phone_url_scheme = models.CharField(max_length=100, default="tel:")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.slug


class Department(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="departments")
    code = models.CharField(max_length=64)
    name = models.CharField(max_length=100)
    name_kana = models.CharField(max_length=200, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    sort_order = models.IntegerField(default=0)
    phone_number = models.CharField(max_length=30, blank=True)
    email = models.EmailField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "code"], name="department_code_unique")]
        ordering = ["sort_order", "code"]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class UserManager(BaseUserManager["User"]):
    def create_user(
        self, *, organization: Organization, login_id: str, password: str | None = None, **fields: Any
    ) -> User:
        user = self.model(organization=organization, login_id=login_id, **fields)
        from directory.importer import user_search_text

        user.search_text = user_search_text(user)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user


class User(AbstractBaseUser):
    """A person in one organisation's directory, who may sign in."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="people")
    login_id = models.CharField(max_length=254)
    last_name = models.CharField(max_length=50)
    first_name = models.CharField(max_length=50, blank=True)
    last_name_kana = models.CharField(max_length=100, blank=True)
    first_name_kana = models.CharField(max_length=100, blank=True)
    department = models.ForeignKey(Department, null=True, blank=True, on_delete=models.SET_NULL, related_name="members")
    position = models.CharField(max_length=100, blank=True)
    email = models.EmailField(blank=True)
    email2 = models.EmailField(blank=True)
    phone_number = models.CharField(max_length=30, blank=True)
    mobile_phone_number = models.CharField(max_length=30, blank=True)
    extension_number = models.CharField(max_length=20, blank=True)
    region_code = models.CharField(max_length=2, blank=True)
    talk_available = models.BooleanField(default=False)
    # Safety-confirmation ID: people without one are not counted against that licence and never dispatched to.
    # NULL, not "", for "none": the per-organisation unique constraint must ignore people without one.
    anpi_login_id = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    language = models.CharField(max_length=2, choices=Language.choices, default=Language.JA)
    # Deactivated people are never deleted: their chat and answer history stays.
    is_active = models.BooleanField(default=True)
    # Site operators (Django admin), not organisation roles.
    is_staff = models.BooleanField(default=False)
    is_superuser = models.BooleanField(default=False)
    invited_at = models.DateTimeField(null=True, blank=True)
    # Lower-cased, NFKC-normalised names, kana (katakana), department, digits of phones and e-mails, so
    # that one indexed-free `icontains` answers directory search.
    search_text = models.TextField(blank=True, default="")
    # Set for one-time and initial passwords: the person must choose their own before anything else.
    must_change_password = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "login_id"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "login_id"], name="user_login_id_unique"),
            models.UniqueConstraint(
                fields=["organization", "anpi_login_id"],
                condition=Q(anpi_login_id__isnull=False),
                name="user_anpi_login_id_unique",
            ),
        ]
        ordering = ["last_name_kana", "first_name_kana", "login_id"]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.login_id}"

    @property
    def display_name(self) -> str:
        return f"{self.last_name} {self.first_name}".strip() or self.login_id

    @cached_property
    def roles(self) -> frozenset[Role]:
        return frozenset(Role(r) for r in self.role_assignments.values_list("role", flat=True))

    def has_role(self, *roles: Role) -> bool:
        return any(role in self.roles for role in roles)

    # Django admin asks these; only site operators (is_superuser) have model permissions.
    def has_perm(self, perm: str, obj: object = None) -> bool:
        return self.is_active and self.is_superuser

    def has_module_perms(self, app_label: str) -> bool:
        return self.is_active and self.is_superuser


class RoleAssignment(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="role_assignments")
    role = models.CharField(max_length=20, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "role"], name="role_assignment_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.role}"


class Notice(models.Model):
    """An organisation-wide notice (お知らせ) posted by an administrator; it streams to every home page."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="notices")
    author = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    title = models.CharField(max_length=200)
    body = models.TextField(max_length=5000, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title


class PersonalGroup(models.Model):
    """A person's own named group of colleagues they call often (グループ電話帳); at most 10 per person."""

    MAX_PER_PERSON = 10
    MAX_MEMBERS = 100

    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="personal_groups")
    name = models.CharField(max_length=50)
    members = models.ManyToManyField(User, related_name="+", blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="personal_group_name_unique")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ImportJob(models.Model):
    """One directory import: the uploaded files, the preview (dry run) and, once confirmed, the result."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Checking")
        PREVIEWED = "previewed", _("Ready to apply")
        INVALID = "invalid", _("Has errors")
        APPLYING = "applying", _("Applying")
        APPLIED = "applied", _("Applied")
        FAILED = "failed", _("Failed")

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    departments_name = models.CharField(max_length=255, blank=True)
    departments_file = models.BinaryField(null=True, blank=True)
    users_name = models.CharField(max_length=255, blank=True)
    users_file = models.BinaryField(null=True, blank=True)
    full_sync = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # {"departments": {...counts and lists}, "users": {...}} as computed by the dry run.
    preview = models.JSONField(null=True, blank=True)
    errors = models.JSONField(default=list, blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"import {self.id} ({self.status})"


MAX_PRIVATE_CONTACTS = 3


class PrivateContact(models.Model):
    """A private e-mail address a person added for safety notifications. It is used only once confirmed through
    the link mailed to it, and only ever shown to the person: no administrator page, API, export or log names it.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="private_contacts")
    address = models.EmailField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    # When the confirmation link was last sent (a link older than PRIVATE_CONTACT_CONFIRM_SECONDS is refused).
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["user", "address"], name="privatecontact_unique")]

    def __str__(self) -> str:  # never the address: this may end up in a log
        return f"private-contact:{self.id}"
