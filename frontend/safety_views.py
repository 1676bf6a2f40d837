"""Safety-confirmation pages for administrators under /<slug>/safety/: the incident list, the registration form,
one incident (send, deliveries, tally, results, proxy answers, completion) and the organisation's templates.

Crisis managers and safety administrators manage incidents; managers and department managers see results only
(department managers only their subtree, as the REST API scopes them). Anyone else gets the 403 page, and an
incident of another organisation the 404 page. The views only read and render: the first screen comes with the
page in the REST API's shapes (safety.api_safety), and every write goes from
frontend/static/frontend/safety_admin.js to the safety REST API (/<slug>/api/safety/), which calls the services."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import pgettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from directory.auth import request_person
from directory.models import Organization, Role, User
from directory.regions import PREFECTURES
from directory.selectors import DepartmentNode, department_tree
from frontend.views import _page, org_page
from safety import escalation, selectors
from safety.api_deliveries import STATES, DeliveryFilter, delivery_status
from safety.api_safety import (
    dispatch_data,
    incident_data,
    questions_data,
    result_row_data,
    tally_data,
    template_data,
)
from safety.models import AnswerSource, AnswerStatus, Channel, DeliveryState, Incident, IncidentStatus
from safety.questions import default_questions
from safety.selectors import ANSWER_FILTERS, ResultFilter, access_incident, result_scope

# Rows of the result list per page (the REST API allows up to 500).
RESULTS_PAGE = 50
# People of the delivery status per page (the REST API allows up to 200).
DELIVERIES_PAGE = 50


def _viewer(request: HttpRequest) -> User:
    """Someone who may see results (crisis manager, safety administrator, manager, department manager)."""
    person = request_person(request)
    if not selectors.can_view_results(person):
        raise PermissionDenied
    return person


def _manager(request: HttpRequest) -> User:
    """Someone who may register, send and complete incidents (crisis manager, safety administrator)."""
    person = request_person(request)
    if not selectors.can_manage_incidents(person):
        raise PermissionDenied
    return person


def _labels() -> dict[str, dict[str, str]]:
    """The words for each state, so the script never shows a raw key."""
    return {
        "incident": {value: str(text) for value, text in IncidentStatus.choices},
        "answer": {(value or "none"): str(text) for value, text in AnswerStatus.choices},
        "channel": {value: str(text) for value, text in Channel.choices},
        "delivery": _delivery_state_labels(),
        "reason": _reason_labels(),
        "source": {value: str(text) for value, text in AnswerSource.choices},
        "answer_filter": _answer_filter_labels(),
        "role": {value: str(text) for value, text in Role.choices},
    }


def _delivery_state_labels() -> dict[str, str]:
    """The words of the delivery states. "Opened" has a context: alone it is an incident's 受付開始."""
    words = {value: str(text) for value, text in DeliveryState.choices}
    words[DeliveryState.OPENED] = pgettext("delivery state", "Opened")
    return words


def _reason_labels() -> dict[str, str]:
    """Why a delivery failed or a person could not be reached (safety.escalation): never an address."""
    return {
        "no_contact": _("No push and no e-mail"),
        "no_push": _("No push subscription"),
        "push_gone": _("Push subscription expired"),
        "push_failed": _("Push failed"),
        "no_email": _("No e-mail address"),
        "email_bounced": _("E-mail bounced"),
        "email_failed": _("E-mail failed"),
    }


def _answer_filter_labels() -> dict[str, str]:
    return {
        "": _("All"),
        "answered": _("Answered"),
        "unanswered": _("Not answered"),
        "safe": _("Safe"),
        "minor": _("Minor injury"),
        "serious": _("Serious injury"),
        "needs_help": _("Needs help"),
    }


def _common_texts() -> dict[str, str]:
    return {
        "network": _("The server could not be reached. Check the connection and try again."),
        "failed": _("That did not work: %(message)s"),
        "saved": _("Saved."),
        "nobody": _("Nobody found."),
        "searching": _("Searching…"),
        "search_failed": _("The search failed. Check the connection and try again."),
        "remove": pgettext("safety list", "Remove"),
        "add": pgettext("safety list", "Add"),
        "drill": _("Drill"),
        "people": _("%(n)s people"),
        "people_one": _("1 person"),
    }


def _departments(organization: Organization, scope: set[int] | None) -> list[dict[str, Any]]:
    """The department tree as a flat list in the directory's order, each with its depth (for indented choices);
    only the caller's scope when they have one."""
    rows: list[dict[str, Any]] = []

    def walk(nodes: list[DepartmentNode], depth: int) -> None:
        for node in nodes:
            if scope is None or node.id in scope:
                rows.append({"id": node.id, "name": node.name, "code": node.code, "depth": depth})
            walk(node.children, depth + 1)

    walk(department_tree(organization=organization), 0)
    return rows


def _local_parts(moment: Any) -> dict[str, str]:
    local = timezone.localtime(moment)
    return {"date": local.strftime("%Y-%m-%d"), "time": local.strftime("%H:%M")}


def _utc_offset() -> str:
    """The organisation's offset from UTC (+09:00 in Japan), for dates typed into the form."""
    offset = timezone.localtime().strftime("%z")
    return f"{offset[:3]}:{offset[3:]}"


# --- The incident list --------------------------------------------------------------------------------------


@never_cache
@require_GET
@org_page()
def incidents_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """Every incident of the organisation, newest first, with its state and how many answered."""
    person = _viewer(request)
    incidents = []
    for incident in selectors.incident_list(organization=organization, scope=selectors.result_scope(person)):
        data = incident_data(incident, slug=organization.slug)
        data["recipients"] = incident.recipients_count  # type: ignore[attr-defined]
        data["answered"] = incident.answered_count  # type: ignore[attr-defined]
        incidents.append(data)
    can_manage = selectors.can_manage_incidents(person)
    texts = {
        **_common_texts(),
        "none": _("No safety checks yet."),
        "answered_of": _("%(answered)s of %(total)s answered"),
        "not_sent": _("Not sent yet"),
        "created": _("Registered %(when)s"),
        "automatic": _("Automatic"),
        "automatic_title": _("Sent automatically from a JMA report"),
        "escalation_saved_off": _("Saved: people who have not answered are not sent it again."),
        "escalation_saved": _("Saved: people who have not answered are sent it again after %(n)s minutes."),
        "escalation_bad": _("Enter a whole number of minutes from 0 (off) to %(max)s."),
        "escalation_on": _("On: sent again after %(n)s minutes."),
        "escalation_off": _("Off: nobody is sent it again automatically."),
    }
    escalate = escalation.escalate_minutes_get(organization_id=organization.id) if can_manage else None
    return _page(
        request,
        "frontend/safety/incidents.html",
        organization,
        incidents=incidents,
        can_manage=can_manage,
        escalate_minutes=escalate,
        escalate_max=escalation.MAX_ESCALATE_MINUTES,
        page_data={
            "incidents": incidents,
            "labels": _labels(),
            "timezone": settings.TIME_ZONE,
            "can_manage": can_manage,
            "escalation": {"minutes": escalate, "max": escalation.MAX_ESCALATE_MINUTES} if can_manage else None,
        },
        texts=texts,
    )


# --- Registering and changing an incident -------------------------------------------------------------------


def _form_texts() -> dict[str, str]:
    return {
        **_common_texts(),
        "kind_single": _("Single choice"),
        "kind_multiple": _("Multiple choice"),
        "kind_text": _("Free text"),
        "question": _("Question %(n)s"),
        "question_ja": _("Question (Japanese)"),
        "question_en": _("Question (English, optional)"),
        "choice_ja": _("Choice %(n)s (Japanese)"),
        "choice_en": _("Choice %(n)s (English, optional)"),
        "add_choice": _("Add a choice"),
        "remove_choice": _("Remove this choice"),
        "remove_question": _("Remove this question"),
        "move_up": _("Move up"),
        "move_down": _("Move down"),
        "required": _("An answer is required"),
        "fixed_choices": _("The choices of this question are fixed, because the tally counts them."),
        "kind": _("Kind of answer"),
        "no_templates": _("No templates found."),
        "template_inserted": _("Inserted the template “%(name)s”."),
        "chars": _("%(n)s / %(max)s characters"),
        "no_questions_hint": _("Sent without questions: people only confirm they have read it, and there is no tally."),
        "need_title": _("Enter a title."),
        "need_message": _("Enter a message."),
        "need_start": _("Enter the date and time the tally starts."),
        "need_end": _("Enter the date and time of the end notice, or turn it off."),
        "need_addresses": _("Enter at least one address for the end notice."),
        "form_errors": _("The incident was not saved. Correct what is marked and try again."),
        "saving": _("Saving…"),
        "confirm_reset": _("Replace the questions with the default questions?"),
    }


def _form_page(request: HttpRequest, organization: Organization, incident: Incident | None) -> HttpResponse:
    now = timezone.now()
    notify: list[dict[str, Any]] = []
    data: dict[str, Any] | None = None
    locked = False
    if incident is not None:
        data = incident_data(incident, slug=organization.slug)
        data["tally_start"] = _local_parts(incident.tally_start_at)
        data["end_notice"] = _local_parts(incident.end_notice_at) if incident.end_notice_at else None
        locked = incident.answers.exists()
        notify = [
            {"id": p.id, "name": p.display_name, "department": p.department.name if p.department else ""}
            for p in User.objects.filter(organization=organization, id__in=incident.notify_user_ids).select_related(
                "department"
            )
        ]
    page_data = {
        "incident": data,
        "default_questions": default_questions(),
        "questions_locked": locked,
        "notify": notify,
        "now": _local_parts(now),
        "utc_offset": _utc_offset(),
        "limits": {"title": 200, "message": 5000},
    }
    return _page(
        request,
        "frontend/safety/incident_form.html",
        organization,
        incident=incident,
        page_data=page_data,
        questions=incident.questions if incident is not None else default_questions(),
        start=data["tally_start"] if data else _local_parts(now),
        texts=_form_texts(),
        questions_locked=locked,
    )


@never_cache
@require_GET
@org_page()
def incident_new_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    _manager(request)
    return _form_page(request, organization, None)


@never_cache
@require_GET
@org_page()
def incident_edit_page(request: HttpRequest, organization: Organization, incident_id: int) -> HttpResponseBase:
    person = _manager(request)
    incident = access_incident(person, incident_id)
    if incident.status == IncidentStatus.COMPLETED:
        messages.error(request, _("This incident is completed and can no longer change."))
        return redirect("safety-incident", slug=organization.slug, incident_id=incident.id)
    return _form_page(request, organization, incident)


# --- One incident -------------------------------------------------------------------------------------------


def incident_detail_data(person: User, incident: Incident, *, slug: str) -> dict[str, Any]:
    """The incident as GET /api/safety/incidents/<id>/ answers it (tally and deliveries in the caller's scope)."""
    scope = result_scope(person)
    data = incident_data(incident, slug=slug)
    data["tally"] = tally_data(selectors.tally_by_department(incident=incident, scope=scope))
    data["deliveries"] = selectors.delivery_counts(incident=incident, scope=scope)
    data["dispatches"] = [dispatch_data(d) for d in incident.dispatches.select_related("created_by")]
    if scope is not None:  # a department manager: who else was chosen, and how many, is not theirs to see
        for row in data["dispatches"]:
            row["target"] = {
                "mode": row["target"].get("mode", "everyone"),
                "escalation": bool(row["target"].get("escalation")),
            }
            row["recipients"] = None
    data["can_manage"] = selectors.can_manage_incidents(person)
    return data


def _detail_texts() -> dict[str, str]:
    return {
        **_common_texts(),
        "reaches": _("This reaches %(n)s people."),
        "reaches_one": _("This reaches 1 person."),
        "reaches_none": _("This reaches nobody: only active people with a safety-confirmation ID can be sent to."),
        "counting": _("Counting…"),
        "confirm_send": _("Send “%(title)s” to %(n)s people now? They are notified at once on every channel."),
        "confirm_send_unknown": _("Send “%(title)s” now? People are notified at once on every channel."),
        "confirm_open": _("Open this incident for answers without sending? People can answer in the app."),
        "confirm_complete": _(
            "Complete this incident? Answers close and the answers shown in the directory are cleared. "
            "This cannot be undone."
        ),
        "sent_ok": _("Sending to %(n)s people."),
        "send": _("Send"),
        "send_again": _("Send again"),
        "target_everyone": _("Everyone"),
        "target_chosen": _("Chosen people (%(n)s)"),
        "target_filter": _("Filter"),
        "target_departments": _("Departments: %(list)s"),
        "target_regions": _("Prefectures: %(list)s"),
        "target_roles": _("Roles: %(list)s"),
        "target_answer": _("Answer: %(value)s"),
        "dispatch_title": _("Send %(n)s"),
        "dispatch_by": _("by %(name)s"),
        "finished": _("Finished %(when)s"),
        "in_progress": _("Sending…"),
        "no_dispatches": _("Not sent yet."),
        "no_deliveries": _("No deliveries yet."),
        "no_results": _("Nobody matches."),
        "no_tally": _("Nobody has been asked yet."),
        "no_department": _("No department"),
        "everyone_total": _("Everyone"),
        "rate": _("%(rate)s%% answered"),
        "answered_of": _("%(answered)s of %(total)s answered"),
        "needs_help": _("Needs help"),
        "first_answer": _("First answer"),
        "last_answer": _("Last answer"),
        "answers_n": _("%(n)s answers"),
        "entered_by": _("Entered by %(name)s"),
        "note": _("Note: %(note)s"),
        "location": _("Location"),
        "map_label": _("Open the location of %(name)s on a map"),
        "history": _("History and proxy answer"),
        "history_for": _("Answers of %(name)s"),
        "history_none": _("No answers yet."),
        "loading": _("Loading…"),
        "showing": _("%(from)s–%(to)s of %(total)s"),
        "proxy_saved": _("The proxy answer has been saved."),
        "proxy_no_questions": _(
            "This incident has no questions: the proxy answer only records that they were reached."
        ),
        "choose_people": _("Choose at least one person."),
        "no_safety_id": _("no safety-confirmation ID"),
        "delivery_of": _("%(channel)s: %(state)s"),
        "deliveries_none": _("Nobody matches."),
        "deliveries_showing": _("%(from)s–%(to)s of %(total)s"),
        "delivery_round": _("round %(n)s"),
        "delivery_not_sent": _("not sent on this channel"),
        "delivery_escalated": _("Sent again automatically %(when)s"),
        "delivery_filter_cell": _("Show the people whose %(channel)s is “%(state)s”"),
        "dispatch_escalation": _("Sent again automatically to people who had not answered"),
        "opened": _("Opened for answers."),
        "completed": _("The incident is completed."),
    }


@never_cache
@require_GET
@org_page()
def incident_page(request: HttpRequest, organization: Organization, incident_id: int) -> HttpResponse:
    """One incident: its state, sending, deliveries, the tally per department and the result list."""
    person = _viewer(request)
    incident = access_incident(person, incident_id)
    scope = result_scope(person)
    detail = incident_detail_data(person, incident, slug=organization.slug)
    rows, total = selectors.result_rows(incident=incident, scope=scope, filters=ResultFilter(), limit=RESULTS_PAGE)
    results = {"total": total, "results": [result_row_data(r) for r in rows], "tally": detail["tally"]}
    deliveries = delivery_status(incident=incident, scope=scope, filters=DeliveryFilter(), limit=DELIVERIES_PAGE)
    language = person.language or settings.LANGUAGE_CODE
    can_manage = detail["can_manage"]
    page_data = {
        "incident": detail,
        "results": results,
        "page_size": RESULTS_PAGE,
        "deliveries": deliveries,
        "deliveries_page": DELIVERIES_PAGE,
        "delivery_states": list(STATES),
        "departments": _departments(organization, scope),
        "send_departments": _departments(organization, None) if can_manage else [],
        "prefectures": [{"code": p.code, "name": p.en if language == "en" else p.ja} for p in PREFECTURES.values()],
        "roles": [{"value": value, "label": str(text)} for value, text in Role.choices],
        "answer_filters": ["", *ANSWER_FILTERS],
        "questions": questions_data(incident, language),
        "labels": _labels(),
        "timezone": settings.TIME_ZONE,
        "refresh_seconds": 10,
    }
    channel_words, state_words = dict(Channel.choices), _delivery_state_labels()
    # The first page as the script draws it, for a first paint (and a browser without scripts).
    table = [
        {
            "data": data,
            "row": row,
            "deliveries": [(str(channel_words[c]), str(state_words[s])) for c, s in sorted(row.deliveries.items())],
        }
        for row, data in zip(rows, results["results"], strict=True)
    ]
    return _page(
        request,
        "frontend/safety/incident.html",
        organization,
        incident=incident,
        detail=detail,
        results=results,
        table=table,
        can_manage=can_manage,
        page_data=page_data,
        answer_filters=_answer_filter_labels(),
        texts=_detail_texts(),
        deliveries=deliveries,
        delivery_table=_delivery_counts_table(deliveries["counts"]),
        delivery_rows=_delivery_rows(deliveries["results"]),
        delivery_states=_delivery_state_labels(),
        channels={value: str(text) for value, text in Channel.choices},
    )


def _delivery_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first page of the delivery status as the page first draws it: a cell per channel, in order."""
    words, channels, reasons = _delivery_state_labels(), dict(Channel.choices), _reason_labels()

    def cell(channel: str, row: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "channel": channel,
            "channel_label": str(channels[channel]),
            "state": row["state"] if row else "",
            "word": words.get(row["state"], "") if row else "",
            "reason": reasons.get(row["reason"] or "", "") if row else "",
        }

    return [{**r, "cells": [cell(c, r["channels"].get(c)) for c in Channel.values]} for r in rows]


def _delivery_counts_table(counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """The counts per channel and state as the page first draws them (safety_admin.js draws the same)."""
    words, channels = _delivery_state_labels(), dict(Channel.choices)
    return [
        {
            "channel": channel,
            "label": str(channels[channel]),
            "cells": [{"state": s, "label": words[s], "n": counts[channel].get(s, 0)} for s in STATES],
        }
        for channel in Channel.values
        if channel in counts
    ]


# --- Templates (定型文) -------------------------------------------------------------------------------------


@never_cache
@require_GET
@org_page()
def templates_page(request: HttpRequest, organization: Organization) -> HttpResponse:
    """The organisation's reusable titles and messages: search, add, change, delete."""
    _manager(request)
    templates = [template_data(t) for t in selectors.template_search(organization=organization, limit=200)]
    texts = {
        **_common_texts(),
        "none": _("No templates yet."),
        "no_match": _("No templates found."),
        "edit": _("Edit"),
        "delete": _("Delete"),
        "confirm_delete": _("Delete the template “%(name)s”?"),
        "deleted": _("Deleted."),
    }
    return _page(
        request,
        "frontend/safety/templates.html",
        organization,
        templates=templates,
        page_data={"templates": templates},
        texts=texts,
    )
