"""Sign-in: the organisation-scoped authentication backend and the django-axes lockout policy."""

from __future__ import annotations

from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.contrib.auth.backends import BaseBackend
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from directory.models import Role, RoleAssignment, User


class OrganisationLoginBackend(BaseBackend):
    """Authenticates (organisation slug, login ID, password); login IDs are unique only within an organisation."""

    def authenticate(
        self,
        request: HttpRequest | None,
        org_slug: str | None = None,
        login_id: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if not org_slug or not login_id or password is None:
            return None
        user = (
            User.objects.select_related("organization")
            .filter(organization__slug=org_slug, login_id=login_id.strip())
            .first()
        )
        if user is None:
            User().set_password(password)  # spend the same time as a real check
            return None
        if user.is_active and user.check_password(password):
            return user
        return None

    def get_user(self, user_id: int) -> User | None:
        return User.objects.select_related("organization").filter(pk=user_id, is_active=True).first()


def request_person(request: HttpRequest) -> User:
    """The signed-in person of a request whose view already required sign-in."""
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user


def client_ip(request: HttpRequest) -> str:
    """The client's address. Each of the TRUSTED_PROXY_COUNT proxies in front appends the address it saw to
    X-Forwarded-For, so the client is that many entries from the right; anything further left was written
    by the client and is ignored."""
    remote = str(request.META.get("REMOTE_ADDR", ""))
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return remote
    hops = [hop.strip() for hop in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if hop.strip()]
    return hops[-count] if len(hops) >= count else remote


def lockout_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str:
    """What axes counts failures against: organisation and login ID together."""
    credentials = credentials or {}
    slug = credentials.get("org_slug")
    match = getattr(request, "resolver_match", None)
    if not slug and match is not None:
        slug = match.kwargs.get("slug")
    login_id = credentials.get("login_id") or request.POST.get("login_id", "")
    return f"{slug or ''}:{str(login_id).strip().lower()}".replace("\x00", "")[:255]


class LockoutHandler(AxesDatabaseHandler):
    """Pair failures count against AXES_FAILURE_LIMIT; a client's failures over all IDs against the higher
    AXES_CLIENT_FAILURE_LIMIT (scaled onto the same limit, since axes compares one number)."""

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        counts = [
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        ]
        pair = counts[0] if counts else 0
        client = counts[1] if len(counts) > 1 else 0
        if client and _never_locked_by_others(lockout_username(request, credentials)):
            # A stranger behind the same address (carrier or office NAT, an untrusted proxy) must not lock out
            # the people who run a disaster response; the per-pair limit still caps guesses against them.
            client = 0
        scaled_client = client * settings.AXES_FAILURE_LIMIT // settings.AXES_CLIENT_FAILURE_LIMIT
        return int(max(pair, scaled_client))

    def reset_user_attempts(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        """A successful sign-in clears only that login's failures from that client, never the client-wide
        count: otherwise anyone could reset it by signing in to their own account between guesses."""
        from axes.models import AccessAttempt

        deleted, _ = AccessAttempt.objects.filter(
            username=lockout_username(request, credentials), ip_address=client_ip(request)
        ).delete()
        return int(deleted)


def _never_locked_by_others(username: str) -> bool:
    slug, _, login_id = username.partition(":")
    if not slug or not login_id:
        return False
    return RoleAssignment.objects.filter(
        user__organization__slug=slug,
        user__login_id__iexact=login_id,
        role__in=[Role.CRISIS_MANAGER, Role.ADMIN_ANPI],
    ).exists()


def password_confirm(request: HttpRequest, user: User, password: str) -> bool:
    """Check the signed-in person's password again (sudo mode, password change) through the same
    authentication as sign-in, so wrong guesses count towards the lockout."""
    from django.contrib.auth import authenticate

    found = authenticate(request, org_slug=user.organization.slug, login_id=user.login_id, password=password)
    return found is not None and found.pk == user.pk


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    if request.path.split("/")[2:3] == ["api"] or request.content_type == "application/json":
        return JsonResponse(
            {"code": "locked_out", "message": f"Too many failed sign-ins. Try again in {minutes} minutes."},
            status=429,
        )
    from directory.selectors import organization_get

    slug = request.resolver_match.kwargs.get("slug", "") if request.resolver_match else ""
    try:
        organization = organization_get(slug)
    except Exception:
        organization = None
    return render(
        request,
        "frontend/login.html",
        {"organization": organization, "locked_out": True, "minutes": minutes},
        status=429,
    )
