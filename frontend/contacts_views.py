"""Pages of private contacts: the confirmation link (no sign-in: the token is the credential) and the profile
section's forms, which work without JavaScript (they post here and come back to the profile)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from config.errors import ApplicationError
from directory.auth import request_person
from directory.contacts import (
    ContactError,
    private_contact_add,
    private_contact_check,
    private_contact_confirm,
    private_contact_remove,
    private_contact_resend,
)
from directory.models import Organization
from frontend.views import _page, org_page, profile_page


class _Typed(str):
    """What the person typed, shown back in the form; its repr (in Django's DEBUG log of a page's context when a
    template variable is missing) leaves it out."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'(private address)'"


def _masked(address: str) -> str:
    """z•••@example.com: enough for the reader of the mail to recognise, not the whole address on a screen."""
    local, _at, domain = address.rpartition("@")
    return f"{local[:1]}•••@{domain}"


@never_cache
@require_http_methods(["GET", "POST"])
@org_page(login=False)
def confirm_page(request: HttpRequest, organization: Organization, token: str) -> HttpResponse:
    """GET shows what is confirmed and a button; only the POST confirms (mail scanners fetch GET links)."""
    try:
        if request.method == "POST":
            contact = private_contact_confirm(token=token, organization_id=organization.id)
            done = True
        else:
            contact = private_contact_check(token=token, organization_id=organization.id)
            done = contact.confirmed_at is not None
    except ApplicationError as exc:
        return _page(
            request,
            "frontend/contacts/confirm_error.html",
            organization,
            error=exc.message,
            expired=exc.code == ContactError.LINK_EXPIRED,
            status=exc.status,
        )
    return _page(
        request,
        "frontend/contacts/confirm.html",
        organization,
        done=done,
        masked_address=_masked(contact.address),
        owner_name=contact.user.display_name,
    )


def _back(organization: Organization, notice: str) -> HttpResponseRedirect:
    return redirect(f"/{organization.slug}/profile/?contacts={notice}#contacts")


@never_cache
@require_POST
@org_page()
def add(request: HttpRequest, organization: Organization) -> HttpResponse:
    address = _Typed(request.POST.get("address", "")[:320])
    try:
        private_contact_add(user=request_person(request), address=address)
    except ApplicationError as exc:
        return profile_page(
            request, organization, contacts_error=exc.message, contacts_value=address, status=exc.status
        )
    return _back(organization, "added")


@never_cache
@require_POST
@org_page()
def resend(request: HttpRequest, organization: Organization, contact_id: int) -> HttpResponse:
    try:
        private_contact_resend(user=request_person(request), contact_id=contact_id)
    except ApplicationError as exc:
        return profile_page(request, organization, contacts_error=exc.message, status=exc.status)
    return _back(organization, "resent")


@never_cache
@require_POST
@org_page()
def remove(request: HttpRequest, organization: Organization, contact_id: int) -> HttpResponse:
    private_contact_remove(user=request_person(request), contact_id=contact_id)
    return _back(organization, "removed")
