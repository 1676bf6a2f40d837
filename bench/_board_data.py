"""The organisation of `bench.board`: a department tree in three levels, people spread over it unevenly (most
in the sections, a few at the department and division level), the board viewers with their roles and a
signed-in session each. Written with `bulk_create`; the incident and its recipients come from
`bench._answers_data`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from directory.models import Department, Organization

# 4 divisions (本部), 3 departments (部) each, 2 sections (課) each: 4 + 12 + 24 = 40 departments.
DIVISIONS, DEPARTMENTS_PER_DIVISION, SECTIONS_PER_DEPARTMENT = 4, 3, 2
WHOLE_BOARD_ROLES = ("CRISIS_MANAGER", "ADMIN_ANPI", "MANAGER")


@dataclass
class Tree:
    levels: list[list[Department]]  # divisions, departments, sections

    @property
    def all(self) -> list[Department]:
        return [d for level in self.levels for d in level]


def tree_create(organization: Organization) -> Tree:
    from directory.models import Department

    divisions = Department.objects.bulk_create(
        [
            Department(organization=organization, code=f"H{i}", name=f"第{i + 1}本部", sort_order=i * 100)
            for i in range(DIVISIONS)
        ]
    )
    departments = Department.objects.bulk_create(
        [
            Department(
                organization=organization,
                code=f"H{i}-{j}",
                name=f"第{i + 1}本部 {j + 1}部",
                parent=division,
                sort_order=i * 100 + (j + 1) * 10,
            )
            for i, division in enumerate(divisions)
            for j in range(DEPARTMENTS_PER_DIVISION)
        ]
    )
    sections = Department.objects.bulk_create(
        [
            Department(
                organization=organization,
                code=f"{department.code}-{k}",
                name=f"{department.name} {k + 1}課",
                parent=department,
                sort_order=department.sort_order + k + 1,
            )
            for department in departments
            for k in range(SECTIONS_PER_DEPARTMENT)
        ]
    )
    return Tree([divisions, departments, sections])


def headcount_weights(tree: Tree, seed: int) -> list[Department]:
    """Each department repeated in proportion to its headcount (people_create assigns round-robin): a division
    office 1, a department office 3, a section 6 to 20."""
    rng = random.Random(seed)
    divisions, departments, sections = tree.levels
    weighted = [*divisions, *(d for d in departments for _ in range(3))]
    weighted += [s for s in sections for _ in range(rng.randint(6, 20))]
    rng.shuffle(weighted)
    return weighted


def managed_departments(tree: Tree, count: int) -> list[Department]:
    """Departments of different sizes for the department managers' boards, spread over the divisions: a
    division, a department, a section, a division, ... (distinct while count <= 12)."""
    divisions, departments, sections = tree.levels
    picked: list[Department] = []
    for n in range(count):
        division, department = n % DIVISIONS, (n % DIVISIONS) * DEPARTMENTS_PER_DIVISION + (n // DIVISIONS) % 3
        level = n % 3
        if level == 0:
            picked.append(divisions[division])
        elif level == 1:
            picked.append(departments[department])
        else:
            picked.append(sections[department * SECTIONS_PER_DEPARTMENT])
    return picked


@dataclass
class Viewer:
    user_id: int
    login_id: str
    department_id: int | None  # the subtree board's department; None for the whole board
    session_key: str


def viewers_create(organization: Organization, whole: int, managed: list[Department]) -> list[Viewer]:
    """`whole` people who see the whole board (crisis managers, safety administrators, managers in turn) and a
    department manager of each `managed` department, each signed in (a session row, as a sign-in leaves)."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from directory.models import Role, RoleAssignment, User

    password = make_password(None)
    specs: list[tuple[str, Department | None]] = [(WHOLE_BOARD_ROLES[i % 3], None) for i in range(whole)]
    specs += [(Role.DEPARTMENT_MANAGER.value, d) for d in managed]
    people = User.objects.bulk_create(
        [
            User(
                organization=organization,
                login_id=f"board{i:02d}@example.co.jp",
                password=password,
                last_name="災害対策",
                first_name=f"{i:02d}",
                department=department,
                email=f"board{i:02d}@example.co.jp",
                search_text=f"災害対策 {i:02d}",
            )
            for i, (_role, department) in enumerate(specs)
        ]
    )
    RoleAssignment.objects.bulk_create(
        [RoleAssignment(user=person, role=role) for person, (role, _d) in zip(people, specs, strict=True)]
    )
    store = SessionStore()
    expires = timezone.now() + timedelta(hours=6)
    viewers, sessions = [], []
    for person, (_role, department) in zip(people, specs, strict=True):
        data = {
            "_auth_user_id": str(person.pk),
            "_auth_user_backend": "directory.auth.OrganisationLoginBackend",
            "_auth_user_hash": person.get_session_auth_hash(),
        }
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        sessions.append(Session(session_key=key, session_data=store.encode(data), expire_date=expires))
        viewers.append(Viewer(person.pk, person.login_id, department.pk if department else None, key))
    Session.objects.bulk_create(sessions)
    return viewers
