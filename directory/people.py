"""People and departments managed one by one (the page, the REST API and Django admin all call these).

The same rules as the import: login IDs and ANPI_LOGIN_IDs unique in the organisation, departments in a
tree without cycles, licence limits, deactivation instead of deletion."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from config.errors import ApplicationError
from directory.hashers import InitialPasswordHasher
from directory.importer import USER_FIELDS, refresh_search_text, user_search_text
from directory.models import Department, Organization, Role, RoleAssignment, User
from directory.regions import PREFECTURES
from directory.tsv import ANPI_LOGIN_ID_RE, LOGIN_ID_RE, PHONE_RE, to_katakana

# The fields a person edits one by one are the ones the import writes.
PERSON_FIELDS = USER_FIELDS


def _clean_person(organization: Organization, data: dict[str, Any], *, user: User | None) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in PERSON_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if name == "talk_available":
            clean[name] = bool(value)
            continue
        value = str(value or "").strip()
        if name in ("email", "email2") and value:
            try:
                validate_email(value)
            except ValidationError:
                errors[name] = _("Not a valid e-mail address.")
        if name in ("phone_number", "mobile_phone_number", "extension_number") and not PHONE_RE.match(value):
            errors[name] = _("Not a phone number.")
        if name.endswith("_kana"):
            value = to_katakana(value)
        if name == "region_code":
            if value.isdigit() and len(value) == 1:
                value = "0" + value
            if value and value not in PREFECTURES:
                errors[name] = _("Not a prefecture code (01-47).")
        if name == "language" and value not in ("ja", "en"):
            errors[name] = _("Choose ja or en.")
        clean[name] = value
    if "last_name" in clean and not clean["last_name"]:
        errors["last_name"] = _("Required.")
    if "department_id" in data:
        dept_id = data["department_id"]
        if dept_id in (None, ""):
            clean["department"] = None
        else:
            dept = Department.objects.filter(organization=organization, id=dept_id).first()
            if dept is None:
                errors["department_id"] = _("No such department.")
            clean["department"] = dept
    if "anpi_login_id" in data:
        anpi = str(data["anpi_login_id"] or "").strip()
        if anpi and not ANPI_LOGIN_ID_RE.match(anpi):
            errors["anpi_login_id"] = _("1-32 half-width letters and digits.")
        elif (
            anpi
            and User.objects.filter(organization=organization, anpi_login_id=anpi)
            .exclude(id=user.id if user else 0)
            .exists()
        ):
            errors["anpi_login_id"] = _("Another person has this ID.")
        clean["anpi_login_id"] = anpi or None
    if errors:
        raise ApplicationError(_("Some fields are not valid."), code="invalid", details=errors)
    return clean


def _check_licence(organization: Organization, *, user: User | None, after: dict[str, Any]) -> None:
    """Refuse a change that would take an active count past the organisation's licence."""
    people = User.objects.filter(organization=organization, is_active=True)
    if user is not None:
        people = people.exclude(id=user.id)
    active = after.get("is_active", True)
    counts = {
        "people": (people.count() + active, organization.max_people, _("people")),
        "talk": (
            people.filter(talk_available=True).count() + (active and bool(after.get("talk_available"))),
            organization.max_talk_users,
            _("talk users"),
        ),
        "safety": (
            people.filter(anpi_login_id__isnull=False).count() + (active and bool(after.get("anpi_login_id"))),
            organization.max_safety_users,
            _("safety-confirmation users"),
        ),
    }
    for count, limit, label in counts.values():
        if count > limit:
            raise ApplicationError(
                _("This would make %(count)s %(label)s; the licence allows %(limit)s.")
                % {"count": count, "label": label, "limit": limit},
                code="licence_limit",
            )


@transaction.atomic
def person_create(
    *, organization: Organization, login_id: str, password: str, roles: Iterable[str] = (), **data: Any
) -> User:
    """Add one person with an initial password they must replace at first sign-in."""
    login_id = login_id.strip()
    if not LOGIN_ID_RE.match(login_id):
        raise ApplicationError(_("A login ID without spaces is required."), code="invalid", details={"login_id": "x"})
    if not password:
        raise ApplicationError(_("An initial password is required."), code="invalid", details={"password": "x"})
    if User.objects.filter(organization=organization, login_id=login_id).exists():
        raise ApplicationError(_("This login ID is taken."), code="login_id_taken", details={"login_id": "taken"})
    clean = _clean_person(organization, {"language": "ja", **data}, user=None)
    Organization.objects.select_for_update().filter(id=organization.id).get()
    _check_licence(organization, user=None, after=clean)
    user = User(organization=organization, login_id=login_id, must_change_password=True, **clean)
    user.password = make_password(password, hasher=InitialPasswordHasher())
    user.search_text = user_search_text(user)
    user.save()
    _set_roles(user, roles)
    return user


@transaction.atomic
def person_update(*, user: User, roles: Iterable[str] | None = None, **data: Any) -> User:
    """Change one person's directory fields (and roles when given)."""
    clean = _clean_person(user.organization, data, user=user)
    Organization.objects.select_for_update().filter(id=user.organization_id).get()
    after = {
        "is_active": user.is_active,
        "talk_available": clean.get("talk_available", user.talk_available),
        "anpi_login_id": clean.get("anpi_login_id", user.anpi_login_id),
    }
    _check_licence(user.organization, user=user, after=after)
    for name, value in clean.items():
        setattr(user, name, value)
    user.search_text = user_search_text(user)
    try:
        user.save()
    except IntegrityError:
        raise ApplicationError(_("Another person has this ID."), code="anpi_login_id_taken") from None
    if roles is not None:
        _set_roles(user, roles)
    return user


def _set_roles(user: User, roles: Iterable[str]) -> None:
    wanted = set(roles)
    unknown = wanted - set(Role.values)
    if unknown:
        raise ApplicationError(_("Unknown role: %(roles)s") % {"roles": ", ".join(sorted(unknown))}, code="bad_role")
    RoleAssignment.objects.filter(user=user).exclude(role__in=wanted).delete()
    have = set(RoleAssignment.objects.filter(user=user).values_list("role", flat=True))
    RoleAssignment.objects.bulk_create([RoleAssignment(user=user, role=r) for r in sorted(wanted - have)])
    user.__dict__.pop("roles", None)


@transaction.atomic
def person_set_active(*, user: User, active: bool, actor: User) -> User:
    """Deactivate (never delete: history stays) or reactivate a person."""
    if not active and user.id == actor.id:
        raise ApplicationError(_("You cannot deactivate yourself."), code="self_deactivation")
    if active and not user.is_active:
        Organization.objects.select_for_update().filter(id=user.organization_id).get()
        _check_licence(
            user.organization,
            user=user,
            after={"is_active": True, "talk_available": user.talk_available, "anpi_login_id": user.anpi_login_id},
        )
    user.is_active = active
    user.save(update_fields=["is_active"])
    return user


def _department_clean(
    organization: Organization, data: dict[str, Any], *, department: Department | None
) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if "code" in data:
        code = str(data["code"] or "").strip()
        if not code or len(code) > 64:
            errors["code"] = _("Required, at most 64 characters.")
        elif (
            Department.objects.filter(organization=organization, code=code)
            .exclude(id=department.id if department else 0)
            .exists()
        ):
            errors["code"] = _("This code is taken.")
        clean["code"] = code
    if "name" in data:
        name = str(data["name"] or "").strip()
        if not name or len(name) > 100:
            errors["name"] = _("Required, at most 100 characters.")
        clean["name"] = name
    if "name_kana" in data:
        clean["name_kana"] = to_katakana(str(data["name_kana"] or "").strip())
    if "sort_order" in data:
        try:
            clean["sort_order"] = int(data["sort_order"] or 0)
        except (TypeError, ValueError):
            errors["sort_order"] = _("A whole number.")
    if "phone_number" in data:
        clean["phone_number"] = str(data["phone_number"] or "").strip()
        if not PHONE_RE.match(clean["phone_number"]):
            errors["phone_number"] = _("Not a phone number.")
    if "email" in data:
        clean["email"] = str(data["email"] or "").strip()
        if clean["email"]:
            try:
                validate_email(clean["email"])
            except ValidationError:
                errors["email"] = _("Not a valid e-mail address.")
    if "parent_id" in data:
        parent_id = data["parent_id"]
        parent = (
            None
            if parent_id in (None, "")
            else Department.objects.filter(organization=organization, id=parent_id).first()
        )
        if parent_id not in (None, "") and parent is None:
            errors["parent_id"] = _("No such department.")
        elif parent is not None and department is not None:
            node: Department | None = parent
            while node is not None:
                if node.id == department.id:
                    errors["parent_id"] = _("A department cannot be inside itself.")
                    break
                node = node.parent
        clean["parent"] = parent
    if errors:
        raise ApplicationError(_("Some fields are not valid."), code="invalid", details=errors)
    return clean


@transaction.atomic
def department_create(*, organization: Organization, **data: Any) -> Department:
    clean = _department_clean(organization, {"code": "", "name": "", **data}, department=None)
    return Department.objects.create(organization=organization, **clean)


@transaction.atomic
def department_update(*, department: Department, **data: Any) -> Department:
    clean = _department_clean(department.organization, data, department=department)
    renamed = "name" in clean and clean["name"] != department.name
    for name, value in clean.items():
        setattr(department, name, value)
    department.save()
    if renamed:
        refresh_search_text(organization=department.organization, department_ids=[department.id])
    return department


@transaction.atomic
def department_delete(*, department: Department) -> None:
    """Remove an empty department: no sub-departments and no active people."""
    if department.children.exists():
        raise ApplicationError(_("Move or remove its sub-departments first."), code="department_not_empty")
    if department.members.filter(is_active=True).exists():
        raise ApplicationError(_("Move its people to another department first."), code="department_not_empty")
    department.members.update(department=None)
    department.delete()
