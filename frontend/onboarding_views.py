"""Pages for onboarding (the invitation page, the printable sign-in sheet, the welcome link) and personal
groups. Each is thin: resolve the organisation, call one service or selector, render."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import segno
from django.contrib import auth, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from config.errors import ApplicationError
from directory import groups, onboarding
from directory.auth import request_person
from directory.models import Department, Organization, PersonalGroup, Role, User
from directory.selectors import person_search
from frontend.views import _page, org_page

# Messages name at most this many login IDs; the rest are counted.
NAMES_SHOWN = 20


def _require_system_admin(request: HttpRequest) -> User:
    person = request_person(request)
    if not person.has_role(Role.SYSTEM_ADMIN):
        raise PermissionDenied
    return person


def _id(value: str | None) -> int:
    """A positive id from a form or query field; Http404 for anything else (no such thing, as far as anyone
    outside can tell)."""
    try:
        number = int(str(value))
    except ValueError:
        raise Http404 from None
    if not 0 < number < 2**63:
        raise Http404
    return number


def _login_ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:NAMES_SHOWN])
    if len(ids) > NAMES_SHOWN:
        shown += " " + _("and %(n)d more") % {"n": len(ids) - NAMES_SHOWN}
    return shown


# --- Onboarding -----------------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def onboarding_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Departments with their sign-in state; invite a department's people who have never signed in."""
    admin = _require_system_admin(request)
    if request.method == "POST":
        department = _department(organization, request.POST.get("department_id"))
        people = onboarding.department_people(
            department=department, include_subdepartments=request.POST.get("sub") == "1", never_signed_in=True
        )
        result = onboarding.people_invite(organization=organization, actor=admin, user_ids=[p.id for p in people])
        if result.invited:
            messages.success(
                request,
                _("%(department)s: %(n)d invitation(s) sent.") % {"department": department.name, "n": result.invited},
            )
        if result.without_email:
            messages.warning(
                request,
                _("No e-mail address, so not invited (print a sign-in sheet for them): %(ids)s")
                % {"ids": _login_ids(result.without_email)},
            )
        if not people:
            messages.info(
                request,
                _("%(department)s: everyone has signed in already; nobody was invited.")
                % {"department": department.name},
            )
        return redirect(f"/{organization.slug}/onboarding/#department-{department.id}")
    return _page(
        request,
        "frontend/onboarding/onboarding.html",
        organization,
        rows=onboarding.onboarding_overview(organization=organization),
        invitation_days=onboarding.INVITATION_DAYS,
    )


def _department(organization: Organization, department_id: str | None) -> Department:
    return onboarding.access_department(organization=organization, department_id=_id(department_id))


@dataclass(frozen=True)
class SheetCard:
    name: str
    login_id: str
    department: str
    url: str
    qr: SafeString


def qr_svg(url: str) -> SafeString:
    """An inline SVG QR code (error correction M, which survives a crease or a smudge on paper). Sized by CSS,
    so it carries a viewBox instead of a width and height. segno writes only the path, never the URL's text."""
    return mark_safe(segno.make(url, error="m").svg_inline(scale=3, omitsize=True, svgclass="qr"))  # noqa: S308


@never_cache
@require_http_methods(["GET"])
@org_page()
def sign_in_sheet(request: HttpRequest, organization: Organization, department_id: int) -> HttpResponse:
    """An A4 page with one card per active person of the department (`?sub=1`: and the departments below):
    name, login ID and a QR code of the sign-in URL with the login ID filled in."""
    _require_system_admin(request)
    department = onboarding.access_department(organization=organization, department_id=department_id)
    sub = request.GET.get("sub") == "1"
    cards = []
    for person in onboarding.department_people(department=department, include_subdepartments=sub):
        url = onboarding.sign_in_url(organization=organization, login_id=person.login_id)
        cards.append(
            SheetCard(
                name=person.display_name,
                login_id=person.login_id,
                department=person.department.name if person.department else "",
                url=url,
                qr=qr_svg(url),
            )
        )
    return _page(
        request,
        "frontend/onboarding/sheet.html",
        organization,
        department=department,
        sub=sub,
        has_children=Department.objects.filter(parent=department).exists(),
        cards=cards,
        sign_in_url=onboarding.sign_in_url(organization=organization),
    )


@never_cache
@require_http_methods(["GET", "POST"])
@org_page(login=False)
def welcome(request: HttpRequest, organization: Organization, uidb64: str, token: str) -> HttpResponse:
    """The invitation link: choose a password, then be signed in and go home. A used or expired link: 400."""
    invitee = onboarding.invitation_user(organization=organization, uidb64=uidb64, token=token)
    context: dict[str, Any] = {"valid": invitee is not None, "invitee": invitee}
    if invitee is None:
        context["status"] = 400
    elif request.method == "POST":
        new, again = request.POST.get("new_password", ""), request.POST.get("new_password2", "")
        try:
            if new != again:
                raise ApplicationError(_("The two new passwords differ."), code="mismatch")
            user = onboarding.invitation_accept(organization=organization, uidb64=uidb64, token=token, new_password=new)
        except ApplicationError as exc:
            context.update(error=exc.message, status=400)
        else:
            auth.login(request, user, backend="directory.auth.OrganisationLoginBackend")
            messages.success(request, _("Your password is set. Welcome!"))
            return redirect("home", slug=organization.slug)
    return _page(request, "frontend/onboarding/welcome.html", organization, **context)


# --- Personal groups ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    person: User
    phones: list[groups.PhoneLink]


@dataclass(frozen=True)
class Candidate:
    person: User
    in_group: bool


@dataclass(frozen=True)
class GroupCard:
    id: int
    name: str
    members: list[MemberRow]
    query: str
    candidates: list[Candidate] | None  # None: no search in this group


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def groups_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """The person's own groups: create, rename, delete, add and remove members (found by a search), and call
    them. Works without JavaScript: every change is a form post, then a redirect back to the group."""
    person = request_person(request)
    context: dict[str, Any] = {}
    if request.method == "POST":
        try:
            target = _group_action(request, person)
        except ApplicationError as exc:
            group_id = request.POST.get("group_id")
            context.update(
                error=exc.message,
                error_group=int(group_id) if group_id and group_id.isdigit() else "new",
                name=request.POST.get("name", "")[:200],
                status=400,
            )
        else:
            return redirect(target)
    search_group = request.GET.get("group", "")
    query = request.GET.get("q", "").strip()[:100]
    cards = []
    scheme = organization.phone_url_scheme
    for group in groups.group_list(owner=person):
        members = groups.group_members(group)
        searching = search_group == str(group.id)
        cards.append(
            GroupCard(
                id=group.id,
                name=group.name,
                members=[MemberRow(m, groups.phone_links(person=m, scheme=scheme)) for m in members],
                query=query if searching else "",
                candidates=[
                    Candidate(c, in_group=c.id in {m.id for m in members})
                    for c in person_search(organization=organization, query=query, limit=20)
                ]
                if searching and query
                else None,
            )
        )
    return _page(
        request,
        "frontend/onboarding/groups.html",
        organization,
        cards=cards,
        max_groups=PersonalGroup.MAX_PER_PERSON,
        can_create=len(cards) < PersonalGroup.MAX_PER_PERSON,
        **context,
    )


def _group_action(request: HttpRequest, person: User) -> str:
    """Apply one form post of the groups page; returns where to go next."""
    action = request.POST.get("action", "")
    base = f"/{person.organization.slug}/groups/"
    if action == "create":
        group = groups.group_create(owner=person, name=request.POST.get("name", ""))
        messages.success(request, _("The group “%(name)s” has been created.") % {"name": group.name})
        return f"{base}#group-{group.id}"
    group = groups.access_group(person, _id(request.POST.get("group_id")))
    if action == "rename":
        groups.group_rename(group=group, name=request.POST.get("name", ""))
        messages.success(request, _("The group has been renamed to “%(name)s”.") % {"name": group.name})
        return f"{base}#group-{group.id}"
    if action == "delete":
        name = group.name
        groups.group_delete(group=group)
        messages.success(request, _("The group “%(name)s” has been deleted.") % {"name": name})
        return base
    if action in ("add", "remove"):
        member_id = _member_id(request.POST.get("person_id"))
        # Deactivated members are hidden on the page, and dropped when the group next changes.
        current = list(group.members.filter(is_active=True).values_list("id", flat=True))
        if action == "add":
            groups.group_members_set(group=group, member_ids=[*current, member_id])
            text = _("%(person)s has been added to “%(group)s”.")
        else:
            groups.group_members_set(group=group, member_ids=[i for i in current if i != member_id])
            text = _("%(person)s has been removed from “%(group)s”.")
        member = User.objects.filter(id=member_id, organization_id=person.organization_id).first()
        messages.success(request, text % {"person": member.display_name if member else "", "group": group.name})
        query = request.POST.get("q", "").strip()[:100]
        if action == "add" and query:  # stay on the search, to add the next colleague
            return f"{base}?{urlencode({'group': group.id, 'q': query})}#group-{group.id}"
        return f"{base}#group-{group.id}"
    raise ApplicationError(_("Unknown action."), code="bad_action")


def _member_id(value: str | None) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ApplicationError(_("Choose a person."), code="bad_person") from None
    if not 0 < number < 2**63:
        raise ApplicationError(_("Choose a person."), code="bad_person")
    return number
