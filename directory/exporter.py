"""Directory export: the department and user files an administrator edits in Excel and imports again.

Passwords are never exported (an empty PASSWORD means "unchanged" on import), so export → import is a
no-op. Deactivated people are left out."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from directory.models import Department, Organization, Role, RoleAssignment, User
from directory.tsv import DEPARTMENT_COLUMNS, USER_COLUMNS, write

_ROLE_ORDER = {role.value: index for index, role in enumerate(Role)}


def export_filenames(at: datetime | None = None) -> tuple[str, str]:
    stamp = timezone.localtime(at or timezone.now()).strftime("%Y%m%d%H%M%S")
    return f"export_department_data_{stamp}.tsv", f"export_user_data_{stamp}.tsv"


def departments_export(*, organization: Organization) -> bytes:
    departments = list(Department.objects.filter(organization=organization).order_by("sort_order", "code"))
    codes = {d.id: d.code for d in departments}
    return write(
        DEPARTMENT_COLUMNS,
        (
            [d.code, d.name, d.name_kana, codes.get(d.parent_id or 0, ""), str(d.sort_order), d.phone_number, d.email]
            for d in departments
        ),
    )


def users_export(*, organization: Organization) -> bytes:
    people = list(
        User.objects.filter(organization=organization, is_active=True)
        .select_related("department")
        .order_by("department__sort_order", "department__code", "last_name_kana", "first_name_kana", "login_id")
    )
    roles: dict[int, list[str]] = {}
    for user_id, role in RoleAssignment.objects.filter(user__organization=organization).values_list("user_id", "role"):
        roles.setdefault(user_id, []).append(role)
    return write(
        USER_COLUMNS,
        (
            [
                u.login_id,
                "",  # never exported
                u.last_name,
                u.first_name,
                u.last_name_kana,
                u.first_name_kana,
                u.department.code if u.department else "",
                u.position,
                u.email,
                u.email2,
                u.phone_number,
                u.mobile_phone_number,
                u.extension_number,
                u.region_code,
                ",".join(sorted(roles.get(u.id, []), key=_ROLE_ORDER.__getitem__)),
                "1" if u.talk_available else "0",
                u.anpi_login_id or "",
                u.language,
            ]
            for u in people
        ),
    )
