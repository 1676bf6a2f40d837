"""Page views of the PWA. Each is thin: resolve the organisation, call one service, render."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth import update_session_auth_hash
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from config.errors import ApplicationError
from config.throttle import throttle_allow
from consumers.push import device_list
from consumers.streams import default_streams
from consumers.vapid import vapid_keys
from directory import services
from directory.auth import client_ip, password_confirm, request_person
from directory.contacts import MAX_PRIVATE_CONTACTS, private_contact_list
from directory.models import Organization, Role
from directory.permissions import sudo_mode_active, sudo_mode_start
from directory.selectors import licence_usage, notice_list, organization_get, password_reset_user_exists
from safety.events import can_read_reports
from safety.selectors import can_view_results

PageView = Callable[..., HttpResponseBase]


def org_page(*, login: bool = True, password_ok: bool = False) -> Callable[[PageView], PageView]:
    """Resolve /<slug>/ (404 if unknown, or if the person belongs elsewhere); require sign-in; send people
    with a one-time password to choose their own first."""

    def decorator(view: PageView) -> PageView:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponseBase:
            organization = organization_get(slug)
            user = request.user
            if user.is_authenticated and user.organization_id != organization.id:
                raise Http404
            if login and not user.is_authenticated:
                return redirect(f"/{slug}/?{urlencode({'next': request.get_full_path()})}")
            if login and request_person(request).must_change_password and not password_ok:
                return redirect("password-change", slug=slug)
            return view(request, organization, *args, **kwargs)

        return wrapper

    return decorator


def _page(request: HttpRequest, template: str, organization: Organization | None, **context: Any) -> HttpResponse:
    status = context.pop("status", 200)
    user = request.user
    context.setdefault("organization", organization)
    if organization and user.is_authenticated:
        person = request_person(request)
        context.setdefault("is_system_admin", person.has_role(Role.SYSTEM_ADMIN))
        context.setdefault("reads_disaster_info", can_read_reports(person))
        context.setdefault("views_safety_results", can_view_results(person))
        context.setdefault("uses_talk", person.talk_available)
        context.setdefault("is_talk_admin", person.has_role(Role.ADMIN_GOTALK))
        if not person.must_change_password:  # the live stream opens once they have chosen a password
            context.setdefault("streams_json", json.dumps(default_streams(person)))
    return render(request, template, context, status=status)


# --- Site root ------------------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
def find_organization(request: HttpRequest) -> HttpResponse:
    """The site's root: go to an organisation by its ID, or have its sign-in URL e-mailed."""
    context: dict[str, Any] = {}
    if request.method == "POST":
        if "slug" in request.POST:
            slug = request.POST.get("slug", "").strip().lower()
            try:
                organization_get(slug)
            except Http404:
                context["slug_error"] = _("No organisation has the ID “%(slug)s”.") % {"slug": slug[:50]}
                context["slug"] = slug[:50]
            else:
                return redirect("login", slug=slug)
        else:
            address = request.POST.get("email", "").strip()[:254]
            if "@" not in address:
                context["email_error"] = _("Enter an e-mail address.")
            else:
                # Same answer either way; the throttle only stops this form being used to flood an inbox.
                ip = client_ip(request)
                if throttle_allow(f"links:{address.lower()}", limit=3, window_seconds=3600) and throttle_allow(
                    f"links-ip:{ip}", limit=20, window_seconds=3600
                ):
                    services.organization_links_send(address=address)
                context["email_sent"] = True
    return _page(request, "frontend/find.html", None, **context)


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


def service_worker(request: HttpRequest) -> HttpResponse:
    response = render(
        request,
        "frontend/sw.js",
        {"shell": [static(p) for p in ("frontend/app.css", "frontend/app.js", "frontend/icons/icon-192.png")]},
        content_type="application/javascript",
    )
    response["Service-Worker-Allowed"] = "/"
    response["Cache-Control"] = "no-cache"
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "frontend/404.html", {}, status=404)


# --- Sign-in --------------------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@org_page(login=False)
def login(request: HttpRequest, organization: Organization) -> HttpResponse:
    next_url = request.POST.get("next") or request.GET.get("next") or f"/{organization.slug}/home/"
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}) or not next_url.startswith(
        f"/{organization.slug}/"
    ):
        next_url = f"/{organization.slug}/home/"
    if request.method == "GET" and request.user.is_authenticated:
        return redirect(next_url)
    # The printed sign-in sheet's QR code carries the login ID.
    context: dict[str, Any] = {"next": next_url, "login_id": request.GET.get("login_id", "").strip()[:254]}
    if request.method == "POST":
        login_id = request.POST.get("login_id", "").strip()[:254]
        password = request.POST.get("password", "")
        user = auth.authenticate(request, org_slug=organization.slug, login_id=login_id, password=password)
        if user is not None:
            auth.login(request, user)
            sudo_mode_start(request)
            if user.must_change_password:
                return redirect("password-change", slug=organization.slug)
            return redirect(next_url)
        if getattr(request, "axes_locked_out", False):
            context["locked_out"] = True
            context["minutes"] = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
            context["status"] = 429
        else:
            context["error"] = _("The login ID or password is wrong.")
            context["status"] = 400
        context["login_id"] = login_id
    return _page(request, "frontend/login.html", organization, **context)


@require_POST
@org_page()
def logout(request: HttpRequest, organization: Organization) -> HttpResponse:
    auth.logout(request)
    return redirect("login", slug=organization.slug)


@never_cache
@require_http_methods(["GET", "POST"])
@org_page(password_ok=True)
def password_change(request: HttpRequest, organization: Organization) -> HttpResponse:
    user = request_person(request)
    forced = user.must_change_password
    context: dict[str, Any] = {"forced": forced}
    if request.method == "POST":
        new, again = request.POST.get("new_password", ""), request.POST.get("new_password2", "")
        try:
            if new != again:
                raise ApplicationError(_("The two new passwords differ."), code="mismatch")
            if not forced and not password_confirm(request, user, request.POST.get("current_password", "")):
                raise ApplicationError(_("The current password is wrong."), code="wrong_password")
            services.password_change(user=user, new_password=new)
        except ApplicationError as exc:
            context.update(error=exc.message, status=400)
        else:
            update_session_auth_hash(request, user)
            messages.success(request, _("Your password has been changed."))
            return redirect("home", slug=organization.slug)
    return _page(request, "frontend/password_change.html", organization, **context)


@never_cache
@require_http_methods(["GET", "POST"])
@org_page(login=False)
def password_reset(request: HttpRequest, organization: Organization) -> HttpResponse:
    context: dict[str, Any] = {}
    if request.method == "POST":
        login_id = request.POST.get("login_id", "")[:254].strip()
        # Same answer either way; the throttle only stops this form being used to flood someone's inbox.
        if throttle_allow(
            f"reset:{organization.id}:{login_id.lower()}", limit=3, window_seconds=3600
        ) and throttle_allow(f"reset-ip:{client_ip(request)}", limit=20, window_seconds=3600):
            services.password_reset_request(organization=organization, login_id=login_id)
        context["sent"] = True
    return _page(request, "frontend/password_reset.html", organization, **context)


@never_cache
@require_http_methods(["GET", "POST"])
@org_page(login=False)
def password_reset_confirm(request: HttpRequest, organization: Organization, uidb64: str, token: str) -> HttpResponse:
    context: dict[str, Any] = {
        "valid": password_reset_user_exists(organization=organization, uidb64=uidb64, token=token)
    }
    if not context["valid"]:
        context["status"] = 400
    elif request.method == "POST":
        new, again = request.POST.get("new_password", ""), request.POST.get("new_password2", "")
        try:
            if new != again:
                raise ApplicationError(_("The two new passwords differ."), code="mismatch")
            services.password_reset_confirm(organization=organization, uidb64=uidb64, token=token, new_password=new)
        except ApplicationError as exc:
            context.update(error=exc.message, status=400)
        else:
            messages.success(request, _("Your password has been changed. Sign in with it."))
            return redirect("login", slug=organization.slug)
    return _page(request, "frontend/password_reset_confirm.html", organization, **context)


# --- Signed-in pages ------------------------------------------------------------------------------------


@never_cache
@org_page()
def home(request: HttpRequest, organization: Organization) -> HttpResponse:
    return _page(request, "frontend/home.html", organization, notices=notice_list(organization=organization, limit=20))


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def profile(request: HttpRequest, organization: Organization) -> HttpResponse:
    user = request_person(request)
    if request.method == "POST":
        try:
            services.user_language_set(user=user, language=request.POST.get("language", ""))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            return redirect("profile", slug=organization.slug)
    return profile_page(request, organization)


# What the private-contacts forms (frontend/contacts_views.py) say after they redirect back here.
CONTACT_NOTICES = {
    "added": gettext_lazy("Added. Open the link in the mail we sent to that address to confirm it."),
    "resent": gettext_lazy("A new confirmation link has been sent."),
    "removed": gettext_lazy("The address has been removed."),
}


def profile_page(request: HttpRequest, organization: Organization, **context: Any) -> HttpResponse:
    """The profile page; `context` adds to it (the private-contacts form's error and typed address)."""
    user = request_person(request)
    contacts = private_contact_list(user=user)
    notice = CONTACT_NOTICES.get(request.GET.get("contacts", ""))
    context.setdefault("contacts_notice", notice if request.method == "GET" else None)
    return _page(
        request,
        "frontend/profile.html",
        organization,
        subscriptions=user.push_subscriptions.order_by("-created_at"),
        devices=device_list(user=user),
        private_contacts=contacts,
        private_contacts_max=MAX_PRIVATE_CONTACTS,
        private_contacts_full=len(contacts) >= MAX_PRIVATE_CONTACTS,
        vapid_public_key=vapid_keys().public,
        roles=sorted(Role(r).label for r in user.roles),
        **context,
    )


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def sudo(request: HttpRequest, organization: Organization) -> HttpResponse:
    next_url = request.POST.get("next") or request.GET.get("next") or f"/{organization.slug}/settings/"
    if not next_url.startswith(f"/{organization.slug}/"):
        next_url = f"/{organization.slug}/settings/"
    context: dict[str, Any] = {"next": next_url}
    if request.method == "POST":
        if password_confirm(request, request_person(request), request.POST.get("password", "")):
            sudo_mode_start(request)
            return redirect(next_url)
        context.update(error=_("The password is wrong."), status=400)
    return _page(request, "frontend/sudo.html", organization, **context)


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def organization_settings(request: HttpRequest, organization: Organization) -> HttpResponse:
    if not request_person(request).has_role(Role.SYSTEM_ADMIN):
        raise PermissionDenied
    if not sudo_mode_active(request):
        return redirect(f"/{organization.slug}/sudo/?{urlencode({'next': request.path})}")
    context: dict[str, Any] = {}
    if request.method == "POST":
        if request.POST.get("action") == "notice":
            try:
                services.notice_post(
                    author=request_person(request),
                    title=request.POST.get("title", ""),
                    body=request.POST.get("body", ""),
                )
            except ApplicationError as exc:
                context.update(notice_error=exc.message, status=400)
            else:
                messages.success(request, _("The notice has been posted."))
                return redirect("settings", slug=organization.slug)
        else:
            try:
                services.organization_settings_update(
                    organization=organization,
                    name=request.POST.get("name", ""),
                    logo=request.FILES.get("logo"),
                    remove_logo=request.POST.get("remove_logo") == "1",
                    phone_url_scheme=request.POST.get("phone_url_scheme", organization.phone_url_scheme),
                )
            except ApplicationError as exc:
                context.update(error=exc.message, status=400)
                organization.refresh_from_db()
            else:
                messages.success(request, _("The settings have been saved."))
                return redirect("settings", slug=organization.slug)
    return _page(
        request, "frontend/settings.html", organization, licence=licence_usage(organization=organization), **context
    )


@org_page(login=False)
def help_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    return _page(request, "frontend/help.html", organization)


@org_page(login=False)
def logo(request: HttpRequest, organization: Organization) -> HttpResponseBase:
    if not organization.logo:
        raise Http404
    response = FileResponse(organization.logo.open("rb"), content_type=organization.logo_content_type)
    response["Cache-Control"] = "public, max-age=300"
    response["Content-Security-Policy"] = "default-src 'none'"
    return response


@org_page(login=False)
def manifest(request: HttpRequest, organization: Organization) -> HttpResponse:
    body = {
        "name": organization.name,
        "short_name": organization.name[:12],
        "start_url": f"/{organization.slug}/home/",
        "scope": "/",
        "display": "standalone",
        "background_color": "#ffffff",
        "theme_color": "#b3261e",
        "lang": "ja",
        "icons": [
            {"src": static("frontend/icons/icon-192.png"), "sizes": "192x192", "type": "image/png"},
            {"src": static("frontend/icons/icon-512.png"), "sizes": "512x512", "type": "image/png"},
            {
                "src": static("frontend/icons/icon-maskable-512.png"),
                "sizes": "512x512",
                "type": "image/png",
                "purpose": "maskable",
            },
        ],
    }
    return HttpResponse(json.dumps(body, ensure_ascii=False), content_type="application/manifest+json")
