"""The person's side of a safety check: answering from the signed link without signing in
(/<slug>/answer/<token>/), and in the PWA their open requests (/<slug>/safety/) and the answer page
(/<slug>/safety/<incident_id>/).

Opening a page is a receipt: the link page marks the push delivery opened (?via=push) or the e-mail one (?via=mail,
or no via), the in-app page the in-app one (`safety.services.delivery_report`, forward only). Both pages give
`answer_api`, the person's signed answer API, for answers queued offline.

Both answer pages show the incident's instructions (対策指示), newest first, rendered here so the link page shows
them without JavaScript; answer.js keeps them current (the org stream's `safety.instruction` in the app, a poll
of the link's GET on the link page).

Both answer pages render one template (frontend/safety/answer.html) from the REST API's `request_data` shape, and
frontend/static/frontend/answer.js sends the answer to the REST API (one tap on a safety button sends it). The
page is also a real form that posts back here, so a phone without JavaScript can answer too: the view calls the
same service and redirects back (post/redirect/get). Nothing here writes except through
`safety.services` (`answer_submit`, `delivery_report`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.models import AnonymousUser
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, QueryDict
from django.shortcuts import redirect, render
from django.utils import timezone, translation
from django.utils.dateparse import parse_datetime
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
from safety import selectors, services
from safety.api_safety import ANSWER_RATE_PER_MINUTE, link_recipient, request_data
from safety.board import instruction_list
from safety.models import AnswerSource, Channel, DeliveryState, Recipient
from safety.questions import SAFETY_KEY
from safety.tokens import answer_token

# Status is never colour alone: each safety answer has an icon and a word as well (STYLE.md, "Pages").
ICONS = {"safe": "✓", "minor": "▲", "serious": "✚", "answered": "✓", "": "?"}
LANGUAGES = ("ja", "en")
# The token is in the address: never send it on to another site, never keep the page, never index it.
LINK_HEADERS = {"Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow"}


def _texts() -> dict[str, str]:
    """Texts the script shows, translated here (the script carries no language of its own)."""
    return {
        "sending": _("Sending…"),
        "sent": _("Answer sent at %(time)s."),
        "current": _("You answered %(answer)s at %(time)s. You can change it."),
        "current_plain": _("You answered at %(time)s. You can change it."),
        "network": _("The server could not be reached. Check the connection and try again."),
        "failed": _("That did not work: %(message)s"),
        "closed": _("Answers are closed."),
        "locating": _("Finding your location…"),
        "location_ready": _("Your location (within about %(m)s m) will be sent with your answer."),
        "location_sent": _("Your location (within about %(m)s m) was sent with your answer."),
        "location_failed": _("Your location could not be found (%(reason)s). You can still answer."),
        "location_denied": _("Location was not shared. You can still answer."),
        "location_unsupported": _("This browser cannot share a location. You can still answer."),
        "instruction_new": pgettext("safety instructions", "New"),
        "instruction_by": _("From %(author)s"),
        "instruction_drill": _("DRILL"),
    }


def _when(value: datetime | str | None) -> str:
    """A time the person can read at a glance: today's as 10:02, an earlier day's with its date."""
    moment = parse_datetime(value) if isinstance(value, str) else value
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    return f"{local:%H:%M}" if local.date() == timezone.localdate() else f"{local:%Y-%m-%d %H:%M}"


def _answer_summary(data: Mapping[str, Any], *, closed: bool = False, listed: bool = False) -> dict[str, Any] | None:
    """The current answer as the page states it: "You answered 無事 at 10:02. You can change it." (icon and text)."""
    answer = data["answer"]
    if answer is None:
        return None
    word = ""
    for question in data["questions"]:
        if question["key"] == SAFETY_KEY:
            word = next((c["label"] for c in question["choices"] if c["key"] == answer["values"].get(SAFETY_KEY)), "")
    values = {"answer": word, "time": _when(answer["created_at"])}
    if closed:
        text = _("Your last answer: %(answer)s at %(time)s.") if word else _("You last answered at %(time)s.")
    elif listed:
        text = _("You answered %(answer)s at %(time)s.") if word else _("You answered at %(time)s.")
    else:
        text = (
            _("You answered %(answer)s at %(time)s. You can change it.")
            if word
            else _("You answered at %(time)s. You can change it.")
        )
    status = answer["status"] if answer["status"] in ICONS else "answered"
    return {"status": status, "icon": ICONS[status], "text": text % values}


def _instructions(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The instructions as the page shows them (newest first, as the API lists them), each with its time."""
    return [{**row, "when": _when(row["created_at"])} for row in rows]


def _form(data: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The safety question (shown as three large buttons) apart from the other questions, each choice marked
    with whether `values` chose it."""
    safety: dict[str, Any] | None = None
    others: list[dict[str, Any]] = []
    for question in data["questions"]:
        chosen = values.get(question["key"])
        picked = set(chosen) if isinstance(chosen, list) else {chosen}
        item = {
            **question,
            "value": chosen if isinstance(chosen, str) else "",
            "choices": [
                {**c, "checked": c["key"] in picked, "icon": ICONS.get(c["key"], "")} for c in question["choices"]
            ],
        }
        if question["key"] == SAFETY_KEY and question["kind"] == "single" and safety is None:
            safety = item
        else:
            others.append(item)
    return safety, others


def _posted_values(post: QueryDict, questions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The answer a form without JavaScript sent. The safety buttons are its submit buttons; pressing "Send"
    keeps the safety answer already given (`safety_current`)."""
    values: dict[str, Any] = {}
    for question in questions:
        key = question["key"]
        values[key] = post.getlist(key)[:50] if question["kind"] == "multiple" else post.get(key, "")
    if SAFETY_KEY in values and not values[SAFETY_KEY]:
        values[SAFETY_KEY] = post.get("safety_current", "")
    return values


def _answer_page(
    request: HttpRequest,
    recipient: Recipient,
    *,
    mode: str,
    endpoint: str,
    via: str,
    language: str,
    answer_api: str,
    throttle_key: str = "",
) -> HttpResponseBase | dict[str, Any]:
    """The answer page of either kind, as a template context; on a POST (no JavaScript) record the answer and
    redirect back to the page. A wrong answer is shown on the page, never a server error.

    `answer_api`: the person's signed answer API (the link's), where an answer made offline is queued to: it
    needs no session or CSRF token when the connection comes back."""
    data = request_data(recipient, language=language, with_instructions=True)
    context: dict[str, Any] = {}
    values: Mapping[str, Any] = data["answer"]["values"] if data["answer"] else {}
    if request.method == "POST":
        values = _posted_values(request.POST, data["questions"])
        try:
            if throttle_key and not throttle_allow(
                throttle_key, limit=ANSWER_RATE_PER_MINUTE, window_seconds=60, fail_open=True
            ):
                raise ApplicationError(_("Too many answers; wait a moment."), code="too_many_answers", status=429)
            answer = services.answer_submit(
                incident_id=recipient.incident_id, person=recipient.person, values=values, source=via
            )
        except ApplicationError as exc:
            context.update(error=exc.message, status=exc.status)
        else:
            messages.success(request, _("Answer sent at %(time)s.") % {"time": _when(answer.created_at)})
            return redirect(request.get_full_path())
    safety, others = _form(data, values)
    return {
        **context,
        "mode": mode,
        "incident": data["incident"],
        "current": _answer_summary(data, closed=not data["incident"]["is_open"]),
        "safety": safety,
        "questions": others,
        "safety_current": data["answer"]["values"].get(SAFETY_KEY, "") if data["answer"] else "",
        "instructions": _instructions(data["instructions"]),
        "answer_api": answer_api,
        "page_data": {
            "endpoint": endpoint,
            "answer_api": answer_api,
            "via": via,
            "csrf": mode == "app",
            "request": data,
            "icons": ICONS,
            "texts": _texts(),
        },
    }


# --- The signed link: no sign-in --------------------------------------------------------------------------


def _link_language(request: HttpRequest, recipient: Recipient) -> str:
    """The person's own language, unless they chose the other one on this page (?lang=)."""
    chosen = request.GET.get("lang", "")
    if chosen in LANGUAGES:
        return chosen
    return recipient.person.language if recipient.person.language in LANGUAGES else "ja"


def _link_invalid(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        organization: Organization | None = organization_get(slug)
    except Http404:
        organization = None
    return render(
        request,
        "frontend/safety/_answer_invalid.html",
        {"organization": organization, "user": AnonymousUser()},
        status=404,
    )


def _query(request: HttpRequest, **changes: str) -> str:
    params = {k: v for k, v in request.GET.items() if k in ("via", "lang")}
    params.update(changes)
    return "?" + urlencode(params)


@csrf_exempt  # the token in the address is the credential, not a cookie; the answer API takes no CSRF either
@never_cache
@require_http_methods(["GET", "POST"])
def link_answer_page(request: HttpRequest, slug: str, token: str) -> HttpResponseBase:
    """Answer from the link in the notification or the e-mail, without signing in. An altered, expired or
    foreign link gets a page that says so (404); the page itself is shown as to someone not signed in, so it
    shows nothing of whoever may be signed in on this browser."""
    try:
        recipient = link_recipient(slug, token)
    except Http404:
        response: HttpResponseBase = _link_invalid(request, slug)
    else:
        language = _link_language(request, recipient)
        other = "en" if language == "ja" else "ja"
        via = AnswerSource.PUSH if request.GET.get("via") == "push" else AnswerSource.LINK
        if request.method == "GET":
            # Opened from the notification (?via=push) or the e-mail (?via=mail, or no via: a link copied from it).
            services.delivery_report(
                incident_id=recipient.incident_id,
                person_id=recipient.person_id,
                channel=Channel.PUSH if via == AnswerSource.PUSH else Channel.EMAIL,
                event=DeliveryState.OPENED,
            )
        api = f"/{slug}/api/safety/answer/{token}/"
        with translation.override(language):
            found = _answer_page(
                request,
                recipient,
                mode="link",
                endpoint=api,
                via=via,
                language=language,
                answer_api=api,
                throttle_key=f"safety-link:{client_ip(request)}:{token[-16:]}",  # as the answer API counts
            )
            if isinstance(found, dict):
                # Rendered as for someone not signed in: no menu, no live connection, nobody else's page.
                found.update(
                    organization=recipient.incident.organization,
                    user=AnonymousUser(),
                    other_language={
                        "code": other,
                        "name": "English" if other == "en" else "日本語",
                        "query": _query(request, lang=other),
                    },
                )
                response = render(request, "frontend/safety/answer.html", found, status=found.pop("status", 200))
            else:
                response = found
        response["Content-Language"] = language
    for name, value in LINK_HEADERS.items():
        response[name] = value
    return response


# --- Signed in: the person's own requests ------------------------------------------------------------------


@never_cache
@require_GET
@org_page()
def my_requests_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """The open safety checks the person was asked to answer, newest first, each with their answer so far and
    the latest instruction (the whole list is on the answer page). Open requests are few: one query each."""
    person = request_person(request)
    rows = []
    for recipient in selectors.open_requests(person=person):
        data = request_data(recipient, language=person.language)
        latest = _instructions(instruction_list(incident=recipient.incident, limit=1))
        rows.append(
            {
                "incident": data["incident"],
                "current": _answer_summary(data, listed=True),
                "instruction": latest[0] if latest else None,
            }
        )
    return _page(request, "frontend/safety/_answer_mine.html", organization, requests=rows)


@never_cache
@require_http_methods(["GET", "POST"])
@org_page()
def answer_page(request: HttpRequest, organization: Organization, incident_id: int) -> HttpResponseBase:
    """Answer in the app (404 unless the person was asked)."""
    person = request_person(request)
    recipient = selectors.access_request(person, incident_id)
    recipient.person = person
    if request.method == "GET":
        services.delivery_report(
            incident_id=recipient.incident_id, person_id=person.id, channel=Channel.INAPP, event=DeliveryState.OPENED
        )
    token = answer_token(organization_id=organization.id, incident_id=recipient.incident_id, person_id=person.id)
    found = _answer_page(
        request,
        recipient,
        mode="app",
        endpoint=f"/{organization.slug}/api/safety/mine/{incident_id}/",
        via=AnswerSource.APP,
        language=person.language,
        answer_api=f"/{organization.slug}/api/safety/answer/{token}/",
    )
    if not isinstance(found, dict):
        return found
    return _page(request, "frontend/safety/answer.html", organization, **found)
