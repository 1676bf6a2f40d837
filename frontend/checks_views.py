"""Contact verification (連絡先の確認) pages: the administrators' page (/<slug>/safety/checks/) and the person's
one-tap confirm page from the test notification (/<slug>/check/<token>/, no sign-in).

The administrators' page renders the latest (or the chosen) check whole: its counts per problem as filter links,
one page of the people with their problem chips, the schedule and the past checks, so it reads without JavaScript;
frontend/static/frontend/checks.js starts a check, sends again and saves the schedule through the REST API
(safety.api_checks), and follows a check while it is being sent. The confirm page is a plain form: a GET only
shows the button (mail scanners fetch links), a POST confirms through `safety.checks.check_confirm` and redirects
back (post/redirect/get), so it works without JavaScript."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import pgettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from config.errors import ApplicationError
from config.throttle import throttle_allow
from directory.auth import client_ip, request_person
from directory.models import Organization
from directory.selectors import organization_get
from frontend.views import _page, org_page
from safety import checks
from safety.api_checks import LINK_RATE_PER_MINUTE, check_data, report_data, report_params, schedule_data
from safety.models import Channel, ContactCheck, ContactCheckPerson, DeliveryState

PAGE_SIZE = 50
LANGUAGES = ("ja", "en")
# The token is in the address: never send it on to another site, never keep the page, never index it.
LINK_HEADERS = {"Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow"}
# Status is never colour alone: each problem has an icon and a word as well (STYLE.md, "Pages").
PROBLEM_ICONS = {
    "no_contact": "⊘",
    "no_push": "○",
    "push_failing": "!",
    "email_bounced": "✉",
    "not_confirmed": "?",
    "ok": "✓",
}


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    return f"{local:%H:%M}" if local.date() == timezone.localdate() else f"{local:%Y-%m-%d %H:%M}"


def _labels() -> dict[str, Any]:
    delivery = {value: str(text) for value, text in DeliveryState.choices}
    delivery[DeliveryState.OPENED] = pgettext("delivery state", "Opened")
    delivery[DeliveryState.ANSWERED] = _("Confirmed")
    return {
        "problem": {**checks.problem_labels(), "ok": _("No problem")},
        "channel": {Channel.PUSH: _("Push"), Channel.EMAIL: _("E-mail")},
        "delivery": delivery,
        "icons": PROBLEM_ICONS,
    }


def _texts() -> dict[str, str]:
    """Texts checks.js shows, translated here (the script carries no language of its own)."""
    return {
        "network": _("The server could not be reached. Check the connection and try again."),
        "failed": _("That did not work: %(message)s"),
        "saved": _("Saved."),
        "starting": _("Starting the check…"),
        "resending": _("Sending again…"),
        "resend_confirm": _("Send the test notification again to these %(n)s people?"),
        "resent": _("Sent again to %(n)s people."),
        "running": _("Being sent…"),
        "finished": _("Sent"),
        "confirmed_at": _("Confirmed %(time)s"),
        "not_confirmed": _("Not confirmed"),
        "next_at": _("Next check: %(time)s"),
        "schedule_off": _("No scheduled checks."),
        "matched": _("%(n)s people"),
        "nobody": _("Nobody here."),
    }


def _viewer(request: HttpRequest) -> Any:
    person = request_person(request)
    if not checks.can_view_checks(person):
        raise PermissionDenied
    return person


def _check_param(organization: Organization, raw: str) -> Any:
    """The check chosen with ?check= (ignored when malformed or not this organisation's), else the latest."""
    if raw.isascii() and raw.isdigit() and 0 < len(raw) <= 18:
        found = ContactCheck.objects.filter(organization=organization, id=int(raw)).first()
        if found is not None:
            return found
    return checks.latest_check(organization=organization)


@never_cache
@require_GET
@org_page()
def checks_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Start a check, schedule one every N days, see the latest check's counts per problem (each a filter), its
    people with their problem chips, and send again to the people of the filter; the past checks below."""
    person = _viewer(request)
    can_run = checks.can_run_checks(person)
    scope = checks.check_scope(person)
    error = ""
    try:
        params = report_params(request, person)
    except ApplicationError as exc:  # a hand-edited address: show the message and the default view
        error, params = exc.message, {"problem": "", "department_ids": None, "offset": 0, "limit": PAGE_SIZE}
    params["limit"] = min(params["limit"], PAGE_SIZE)
    check = _check_param(organization, request.GET.get("check", ""))
    history = checks.check_list(organization=organization, limit=20)
    summaries = checks.check_summaries(checks=history, scope=scope)
    latest = history[0] if history else None
    report = checks.check_report(check=check, scope=scope, **params) if check is not None else None
    report_shape = report_data(report, offset=params["offset"], limit=params["limit"]) if report else None
    current: dict[str, Any] | None = None
    if check is not None and report is not None:
        current = check_data(
            check, slug=organization.slug, summary=(report.counts["total"], report.counts["confirmed"])
        )
    problem = params["problem"]
    labels = _labels()
    base_query = {"check": str(check.id)} if check is not None else {}
    if request.GET.get("department") and not error:
        base_query["department"] = request.GET["department"]

    def query(**changes: Any) -> str:
        values = {**base_query, **{k: str(v) for k, v in changes.items() if v not in ("", None, 0)}}
        return "?" + urlencode(values)

    # "": anyone with a problem.
    counts = {**report.counts, "": report.counts["total"] - report.counts["ok"]} if report else {}
    filters = [
        {
            "code": code,
            "label": labels["problem"].get(code, _("Any problem")),
            "icon": PROBLEM_ICONS.get(code, "⚠"),
            "count": counts.get(code, 0),
            "url": query(problem=code),
            "current": code == problem,
        }
        for code in ("", *checks.PROBLEM_CODES, "ok")
    ]
    rows = []
    if report_shape:
        for row in report_shape["people"]:
            confirmed_at = row["confirmed_at"]
            rows.append(
                {
                    **row,
                    "chips": [
                        {"code": c, "label": labels["problem"][c], "icon": PROBLEM_ICONS[c]} for c in row["problems"]
                    ],
                    "confirmed_when": _when(datetime.fromisoformat(confirmed_at)) if confirmed_at else "",
                    "channel_states": [
                        {"channel": labels["channel"][c], "state": s, "label": labels["delivery"].get(s, s)}
                        for c, s in sorted(row["channels"].items())
                    ],
                }
            )
    matched = report.matched if report else 0
    offset = params["offset"]
    # Sending again reaches the people of a problem filter; "ok", "everyone" and "no contact" have nobody to reach.
    resend_problems = [] if problem == "" else [problem]
    every_days, next_at = checks.check_schedule_get(organization=organization)
    return _page(
        request,
        "frontend/checks/checks.html",
        organization,
        can_run=can_run,
        error=error,
        check=current,
        check_when=_when(check.created_at) if check is not None else "",
        is_latest=check is not None and latest is not None and check.id == latest.id,
        counts=report.counts if report else None,
        filters=filters,
        problem=problem,
        problem_label=labels["problem"].get(problem, _("Any problem")) if problem not in ("", "all") else "",
        rows=rows,
        matched=matched,
        can_resend=can_run
        and report is not None
        and problem not in ("ok", "all", "no_contact")
        and (latest is not None and check is not None and check.id == latest.id)
        and matched > 0,
        prev_url=query(problem=problem, offset=max(0, offset - PAGE_SIZE)) if offset > 0 else "",
        next_url=query(problem=problem, offset=offset + PAGE_SIZE) if offset + PAGE_SIZE < matched else "",
        range_from=offset + 1 if matched else 0,
        range_to=min(offset + PAGE_SIZE, matched),
        every_days=every_days,
        next_at=_when(next_at),
        history=[
            {**check_data(c, slug=organization.slug, summary=summaries.get(c.id, (0, 0))), "when": _when(c.created_at)}
            for c in history
        ],
        labels=labels,
        page_data={
            "check": current,
            "problem": problem,
            "resend_problems": resend_problems,
            "matched": matched,
            "query": request.GET.urlencode(),
            "schedule": schedule_data(organization),
            "labels": labels,
            "texts": _texts(),
        },
    )


# --- The person's confirm page (no sign-in) -------------------------------------------------------------------


def _invalid(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        organization: Organization | None = organization_get(slug)
    except Http404:
        organization = None
    return render(
        request, "frontend/checks/invalid.html", {"organization": organization, "user": AnonymousUser()}, status=404
    )


def _link_language(request: HttpRequest, check_person: ContactCheckPerson) -> str:
    chosen = request.GET.get("lang", "")
    if chosen in LANGUAGES:
        return chosen
    return check_person.person.language if check_person.person.language in LANGUAGES else "ja"


def _via(request: HttpRequest) -> str:
    return "push" if request.GET.get("via") == "push" else "mail"


@csrf_exempt  # the token in the address is the credential, not a cookie; the confirm API takes no CSRF either
@never_cache
@require_http_methods(["GET", "POST"])
def check_link_page(request: HttpRequest, slug: str, token: str) -> HttpResponseBase:
    """The test notification's page: one big 「確認しました」 button. A GET only shows it (and records that the link
    was opened); the POST confirms and comes back here, which then says so. An altered, expired or foreign link
    gets a page that says so (404). Rendered as for someone not signed in: nothing of whoever may be signed in on
    this browser shows."""
    try:
        check_person = checks.link_person(token, slug=slug)
    except Http404:
        response: HttpResponseBase = _invalid(request, slug)
    else:
        language = _link_language(request, check_person)
        with translation.override(language):
            response = _confirm_page(request, check_person, token=token, language=language)
        response["Content-Language"] = language
    for name, value in LINK_HEADERS.items():
        response[name] = value
    return response


def _confirm_page(
    request: HttpRequest, check_person: ContactCheckPerson, *, token: str, language: str
) -> HttpResponseBase:
    check = check_person.check_run
    organization = check.organization
    error = ""
    if request.method == "POST":
        try:
            if not throttle_allow(
                f"check-link:{client_ip(request)}:{token[-16:]}",
                limit=LINK_RATE_PER_MINUTE,
                window_seconds=60,
                fail_open=True,  # a confirmation must not wait for Redis
            ):
                raise ApplicationError(_("Too many requests; wait a moment."), code="too_many_requests", status=429)
            checks.check_confirm(token, _via(request), slug=organization.slug)
        except ApplicationError as exc:
            error = exc.message
        else:
            return redirect(request.get_full_path())
    elif check_person.confirmed_at is None:
        checks.check_opened(check_person, _via(request))
    other = "en" if language == "ja" else "ja"
    params = {k: v for k, v in request.GET.items() if k in ("via", "lang")}
    return render(
        request,
        "frontend/checks/confirm.html",
        {
            "organization": organization,
            "user": AnonymousUser(),
            "person_name": check_person.person.display_name,
            "confirmed": check_person.confirmed_at is not None,
            "confirmed_when": _when(check_person.confirmed_at),
            "error": error,
            "other_language": {
                "code": other,
                "name": "English" if other == "en" else "日本語",
                "query": "?" + urlencode({**params, "lang": other}),
            },
        },
        status=429 if error else 200,
    )
