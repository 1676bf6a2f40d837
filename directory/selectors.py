"""Reads for the directory: organisations by slug, access checks shared by HTTP and WebSocket, notices."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.http import Http404

from directory.models import RESERVED_SLUGS, SLUG_RE, Department, Notice, Organization, User


def organization_get(slug: str) -> Organization:
    """The organisation for a URL slug; Http404 for a malformed, reserved or unknown one."""
    if not isinstance(slug, str) or not SLUG_RE.match(slug) or slug in RESERVED_SLUGS:
        raise Http404
    try:
        return Organization.objects.get(slug=slug)
    except Organization.DoesNotExist:
        raise Http404 from None


def access_organization(user: Any, slug: str) -> Organization:
    """The organisation at `slug` if `user` belongs to it; Http404 otherwise, so others learn nothing."""
    organization = organization_get(slug)
    if not getattr(user, "is_authenticated", False) or user.organization_id != organization.id:
        raise Http404
    return organization


def user_in_organization(user: Any, slug: str) -> bool:
    try:
        access_organization(user, slug)
    except Http404:
        return False
    return True


def notice_list(*, organization: Organization, limit: int = 20) -> list[Notice]:
    return list(Notice.objects.filter(organization=organization).select_related("author")[:limit])


def department_subtree_ids(*, department: Department) -> set[int]:
    """The department and everything below it, in one query."""
    return department_subtrees(organization_id=department.organization_id, department_ids=[department.id])[
        department.id
    ]


def department_subtrees(*, organization_id: int, department_ids: Iterable[int]) -> dict[int, set[int]]:
    """Each listed department with everything below it, in one query: an organisation's tree is small, so it is
    read whole and walked here rather than one query per level or per department. Ids not in the organisation
    are left out."""
    children: dict[int, list[int]] = {}
    known: set[int] = set()
    for dept_id, parent_id in Department.objects.filter(organization_id=organization_id).values_list("id", "parent_id"):
        known.add(dept_id)
        if parent_id is not None:
            children.setdefault(parent_id, []).append(dept_id)
    subtrees: dict[int, set[int]] = {}
    for root in set(department_ids) & known:
        ids = {root}
        frontier = [root]
        while frontier:
            frontier = [child for parent in frontier for child in children.get(parent, ()) if child not in ids]
            ids.update(frontier)
        subtrees[root] = ids
    return subtrees


def users_with_email(*, address: str) -> list[User]:
    address = address.strip()
    if not address:
        return []
    by_first = User.objects.filter(email__iexact=address, is_active=True)
    by_second = User.objects.filter(email2__iexact=address, is_active=True)
    return list((by_first | by_second).select_related("organization").order_by("organization__slug"))


def password_reset_user_exists(*, organization: Organization, uidb64: str, token: str) -> bool:
    from directory.services import password_reset_user

    return password_reset_user(organization=organization, uidb64=uidb64, token=token) is not None


def person_search(
    *,
    organization: Organization,
    query: str = "",
    department: Department | None = None,
    limit: int = 50,
    offset: int = 0,
    include_inactive: bool = False,
    talk_only: bool = False,
) -> list[User]:
    """People matching every term of `query` in name, kana (hiragana works too), department, position,
    phone digits or e-mail; optionally within a department's subtree. Two queries at most."""
    from directory.search import query_terms

    people = User.objects.filter(organization=organization)
    if not include_inactive:
        people = people.filter(is_active=True)
    if talk_only:
        people = people.filter(talk_available=True)
    for term in query_terms(query):
        people = people.filter(search_text__contains=term)
    if department is not None:
        people = people.filter(department_id__in=department_subtree_ids(department=department))
    return list(
        people.select_related("department").order_by("last_name_kana", "first_name_kana", "login_id")[
            offset : offset + limit
        ]
    )


@dataclass(frozen=True)
class DepartmentNode:
    id: int
    code: str
    name: str
    name_kana: str
    phone_number: str
    email: str
    people: int
    children: list[DepartmentNode]


def department_tree(*, organization: Organization) -> list[DepartmentNode]:
    """The department tree with the number of active people in each department (two queries)."""
    from django.db.models import Count, Q

    rows = list(
        Department.objects.filter(organization=organization)
        .annotate(people=Count("members", filter=Q(members__is_active=True)))
        .order_by("sort_order", "code")
    )
    children: dict[int | None, list[Department]] = {}
    for row in rows:
        children.setdefault(row.parent_id, []).append(row)

    def build(parent_id: int | None, seen: frozenset[int]) -> list[DepartmentNode]:
        return [
            DepartmentNode(
                id=d.id,
                code=d.code,
                name=d.name,
                name_kana=d.name_kana,
                phone_number=d.phone_number,
                email=d.email,
                people=d.people,  # type: ignore[attr-defined]
                children=build(d.id, seen | {d.id}) if d.id not in seen else [],
            )
            for d in children.get(parent_id, [])
        ]

    return build(None, frozenset())


def current_safety_answers(*, organization: Organization, user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each person's latest answer to the organisation's open incident, or {} when no incident is open."""
    from safety.selectors import safety_badges

    return safety_badges(organization_id=organization.id, user_ids=user_ids)


def contact_problem_badges(
    *, viewer: Any, organization: Organization, user_ids: list[int]
) -> dict[int, list[str]] | None:
    """Each listed person's contact problems (safety.checks.contact_problems codes; [] for none), for a viewer who
    may see them: administrators and managers, a department manager for their subtree ([] outside it). None for
    anyone else: the field must not appear at all for them."""
    from safety.checks import can_view_checks, check_scope, contact_problems

    if not can_view_checks(viewer):
        return None
    scope = check_scope(viewer)
    ids = list(user_ids)
    if scope is not None:
        ids = list(User.objects.filter(id__in=ids, department_id__in=scope).values_list("id", flat=True))
    found = contact_problems(organization=organization, person_ids=ids) if ids else {}
    return {user_id: found.get(user_id, []) for user_id in user_ids}


def access_person(user: Any, person_id: int, *, include_inactive: bool = False) -> User:
    """A person of the caller's organisation; Http404 for anyone else."""
    people = User.objects.filter(organization_id=user.organization_id, id=person_id).select_related("department")
    if not include_inactive:
        people = people.filter(is_active=True)
    person = people.first()
    if person is None:
        raise Http404
    return person


def access_department(user: Any, department_id: int) -> Department:
    department = Department.objects.filter(organization_id=user.organization_id, id=department_id).first()
    if department is None:
        raise Http404
    return department


def licence_usage(*, organization: Organization) -> dict[str, dict[str, int]]:
    """Active people, talk users and safety-confirmation users against the organisation's licence."""
    active = User.objects.filter(organization=organization, is_active=True)
    return {
        "people": {"used": active.count(), "limit": organization.max_people},
        "talk_users": {"used": active.filter(talk_available=True).count(), "limit": organization.max_talk_users},
        "safety_users": {
            "used": active.filter(anpi_login_id__isnull=False).count(),
            "limit": organization.max_safety_users,
        },
    }
