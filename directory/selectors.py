"""Reads for the directory: organisations by slug, access checks shared by HTTP and WebSocket, notices."""

from __future__ import annotations

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
    """The department and everything below it (one query per level)."""
    ids = {department.id}
    frontier = [department.id]
    while frontier:
        frontier = list(
            Department.objects.filter(parent_id__in=frontier).exclude(id__in=ids).values_list("id", flat=True)
        )
        ids.update(frontier)
    return ids


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
