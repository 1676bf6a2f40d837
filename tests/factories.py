"""Factories for tests: organisations, departments and people with roles."""

from __future__ import annotations

import itertools

from directory.models import Department, Organization, Role, RoleAssignment, User

PASSWORD = "correct-horse-battery"
_counter = itertools.count(1)


def organization(slug: str | None = None, name: str | None = None) -> Organization:
    n = next(_counter)
    return Organization.objects.create(slug=slug or f"org{n}", name=name or f"Organisation {n}")


def department(org: Organization, code: str | None = None, parent: Department | None = None) -> Department:
    n = next(_counter)
    return Department.objects.create(organization=org, code=code or f"D{n}", name=f"部署{n}", parent=parent)


def person(
    org: Organization,
    login_id: str | None = None,
    *,
    roles: tuple[Role, ...] = (),
    password: str = PASSWORD,
    language: str = "ja",
    email: str | None = None,
    must_change_password: bool = False,
    department: Department | None = None,
    talk_available: bool = False,
    anpi_login_id: str | None = None,
    region_code: str = "",
) -> User:
    n = next(_counter)
    login_id = login_id or f"user{n}"
    user = User.objects.create_user(
        organization=org,
        login_id=login_id,
        password=password,
        last_name=f"姓{n}",
        first_name=f"名{n}",
        email=email if email is not None else (login_id if "@" in login_id else f"{login_id}@example.com"),
        language=language,
        must_change_password=must_change_password,
        department=department,
        talk_available=talk_available,
        anpi_login_id=anpi_login_id,
        region_code=region_code,
    )
    for role in roles:
        RoleAssignment.objects.create(user=user, role=role)
    return user
