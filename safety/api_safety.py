"""REST endpoints of the safety confirmation under /<slug>/api/safety/: templates, incidents, sends, results
(list, tally, CSV), answer history and proxy answers, the person's own requests, and answering, signed in or
with a signed link (no sign-in). Views validate, fetch through an access helper, call one service and shape
the answer; the shapes here are also what the pages embed."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any

from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError
from config.params import is_id
from config.throttle import throttle_allow
from directory.api import OrgAPIView
from directory.auth import client_ip
from directory.models import RoleAssignment, User
from directory.permissions import PasswordChanged
from directory.selectors import access_person
from directory.tsv import excel_safe
from safety import selectors, services
from safety.board import instruction_list
from safety.models import Answer, AnswerSource, AnswerStatus, Channel, Dispatch, Incident, MessageTemplate, Recipient
from safety.questions import label
from safety.selectors import ResultFilter, ResultRow, access_incident, access_request, result_scope
from safety.tokens import answer_token_read

ANSWER_RATE_PER_MINUTE = 30
CLIENT_KEY_RE = r"^[A-Za-z0-9-]{1,40}$"
_NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")


class ManagesIncidents(BasePermission):
    message = "Only crisis managers and safety administrators can do this."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and selectors.can_manage_incidents(user))


class ViewsResults(BasePermission):
    message = "Your role does not allow this."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and selectors.can_view_results(user))


# --- Shapes -------------------------------------------------------------------------------------------------


def template_data(template: MessageTemplate) -> dict[str, Any]:
    return {"id": template.id, "name": template.name, "title": template.title, "body": template.body}


def incident_data(incident: Incident, *, slug: str) -> dict[str, Any]:
    return {
        "id": incident.id,
        "title": incident.title,
        "message": incident.message,
        "status": incident.status,
        "status_label": incident.get_status_display(),
        "is_drill": incident.is_drill,
        # Opened by the automatic dispatch from a JMA report (safety.autodispatch).
        "automatic": bool(incident.jma_event),
        "tally_start_at": incident.tally_start_at.isoformat(),
        "end_notice_at": incident.end_notice_at.isoformat() if incident.end_notice_at else None,
        "end_notice_addresses": incident.end_notice_addresses,
        "end_notice_sent_at": incident.end_notice_sent_at.isoformat() if incident.end_notice_sent_at else None,
        "collect_location": incident.collect_location,
        "questions": incident.questions,
        "notify_user_ids": incident.notify_user_ids,
        "created_at": incident.created_at.isoformat(),
        "opened_at": incident.opened_at.isoformat() if incident.opened_at else None,
        "completed_at": incident.completed_at.isoformat() if incident.completed_at else None,
        "url": f"/{slug}/safety/incidents/{incident.id}/",
        "board_url": f"/{slug}/safety/incidents/{incident.id}/board/",
        "room_id": incident.room_id,
    }


def dispatch_data(dispatch: Dispatch) -> dict[str, Any]:
    return {
        "id": dispatch.id,
        "number": dispatch.number,
        "target": dispatch.target,
        "recipients": dispatch.recipients,
        "created_at": dispatch.created_at.isoformat(),
        "created_by": dispatch.created_by.display_name if dispatch.created_by else "",
        "finished_at": dispatch.finished_at.isoformat() if dispatch.finished_at else None,
    }


def _tally_row(r: selectors.DepartmentTally) -> dict[str, Any]:
    return {
        "department_id": r.department_id,
        "name": r.name,
        "counts": r.counts,
        "needs_help": r.needs_help,
        "total": r.total,
        "answered": r.answered,
        "rate": round(r.rate, 4),
    }


def tally_data(rows: Sequence[selectors.DepartmentTally]) -> dict[str, Any]:
    """{"overall": the whole (or the caller's scope), "departments": one row per department}."""
    return {"overall": _tally_row(selectors.tally_total(rows)), "departments": [_tally_row(r) for r in rows]}


def answer_data(answer: Answer | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    return {
        "id": answer.id,
        "values": answer.values,
        "status": answer.status,
        "needs_help": answer.needs_help,
        "latitude": answer.latitude,
        "longitude": answer.longitude,
        "accuracy": answer.accuracy,
        "source": answer.source,
        "source_label": answer.get_source_display(),
        "entered_by": answer.entered_by.display_name if answer.entered_by else None,
        "proxy_note": answer.proxy_note,
        "created_at": answer.created_at.isoformat(),
    }


def result_row_data(row: ResultRow) -> dict[str, Any]:
    person, recipient = row.person, row.recipient
    return {
        "person": {
            "id": person.id,
            "name": person.display_name,
            "login_id": person.login_id,
            "department": person.department.name if person.department else "",
            "department_id": person.department_id,
        },
        "status": recipient.status or "none",
        "status_label": AnswerStatus(recipient.status).label,
        "needs_help": recipient.needs_help,
        "answer_count": recipient.answer_count,
        "first_answered_at": recipient.first_answered_at.isoformat() if recipient.first_answered_at else None,
        "answered_at": recipient.answered_at.isoformat() if recipient.answered_at else None,
        "answer": answer_data(row.answer),
        "deliveries": row.deliveries,
    }


def questions_data(incident: Incident, language: str) -> list[dict[str, Any]]:
    """The incident's question form in one language, as the answer and proxy-answer forms show it."""
    return [
        {
            "key": q["key"],
            "kind": q["kind"],
            "label": label(q, language),
            "required": q.get("required", False),
            "choices": [{"key": c["key"], "label": label(c, language)} for c in q.get("choices", [])],
        }
        for q in incident.questions
    ]


def request_data(recipient: Recipient, *, language: str, with_instructions: bool = False) -> dict[str, Any]:
    """What the answer page needs: the incident, its form in the reader's language, the current answer, and
    (`with_instructions`; an answer's response leaves them out) the incident's instructions, newest first."""
    incident = recipient.incident
    data: dict[str, Any] = {
        "incident": {
            "id": incident.id,
            "title": incident.display_title,
            "message": incident.message,
            "status": incident.status,
            "status_label": incident.get_status_display(),
            "is_open": incident.is_open,
            "is_drill": incident.is_drill,
            "collect_location": incident.collect_location,
            "created_at": incident.created_at.isoformat(),
        },
        "questions": questions_data(incident, language),
        "answer": answer_data(recipient.answer),
        "first_answered_at": recipient.first_answered_at.isoformat() if recipient.first_answered_at else None,
    }
    if with_instructions:
        data["instructions"] = instruction_list(incident=incident)
    return data


# --- Inputs -------------------------------------------------------------------------------------------------


class IncidentIn(serializers.Serializer[Any]):
    title = serializers.CharField(max_length=services.MAX_TITLE)
    message = serializers.CharField(max_length=services.MAX_MESSAGE)
    tally_start_at = serializers.DateTimeField()
    end_notice_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    end_notice_addresses = serializers.ListField(
        child=serializers.CharField(max_length=254, allow_blank=True), required=False, default=list, max_length=50
    )
    collect_location = serializers.BooleanField(required=False, default=False)
    questions = serializers.JSONField(required=False, default=None)
    notify_user_ids = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list, max_length=services.MAX_NOTIFY
    )


class ClientKeyField(serializers.RegexField):
    """A browser's answer id: a string (DRF's CharField would take the number 12345 as "12345")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class AnswerIn(serializers.Serializer[Any]):
    values = serializers.JSONField()
    location = serializers.JSONField(required=False, default=None)
    via = serializers.ChoiceField(choices=["app", "link", "push"], required=False, default="app")
    # The browser's id for this answer (a UUID): posted again, it is kept once (services.answer_submit).
    client_key = ClientKeyField(CLIENT_KEY_RE, max_length=40, required=False, default="", allow_blank=True)
    # A notification button: only the questions given are checked and changed.
    quick = serializers.BooleanField(required=False, default=False)


class ReceiptIn(serializers.Serializer[Any]):
    event = serializers.ChoiceField(choices=[str(e) for e in services.RECEIPT_EVENTS])
    channel = serializers.ChoiceField(choices=Channel.values, required=False, default=Channel.PUSH)


def _filters(request: Request) -> ResultFilter:
    params = request.query_params
    department = params.get("department", "")
    answer = params.get("answer", "")
    if answer and answer not in selectors.ANSWER_FILTERS:
        raise ApplicationError(_("Unknown answer filter."), code="bad_filter")
    if department and not is_id(department):
        raise ApplicationError(_("department must be a department id."), code="bad_filter")
    return ResultFilter(
        department_id=int(department) if department else None, answer=answer, query=params.get("q", "")[:100]
    )


def _page_params(request: Request) -> tuple[int, int]:
    limit, offset = request.query_params.get("limit", ""), request.query_params.get("offset", "")
    return (
        min(int(limit), 500) if is_id(limit) and int(limit) > 0 else 200,
        int(offset) if is_id(offset) else 0,
    )


# --- Templates ----------------------------------------------------------------------------------------------


class TemplatesApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, ManagesIncidents]

    class In(serializers.Serializer[Any]):
        name = serializers.CharField(max_length=100)
        title = serializers.CharField(max_length=services.MAX_TITLE, required=False, allow_blank=True, default="")
        body = serializers.CharField(max_length=services.MAX_MESSAGE, required=False, allow_blank=True, default="")

    def get(self, request: Request, slug: str) -> Response:
        found = selectors.template_search(organization=self.organization, query=request.query_params.get("q", ""))
        return Response([template_data(t) for t in found])

    def post(self, request: Request, slug: str) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        template = services.template_create(organization=self.organization, **data.validated_data)
        return Response(template_data(template), status=201)


class TemplateApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, ManagesIncidents]

    def patch(self, request: Request, slug: str, template_id: int) -> Response:
        template = get_object_or_404(MessageTemplate, organization=self.organization, id=template_id)
        data = TemplatesApi.In(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(template_data(services.template_update(template=template, **data.validated_data)))

    def delete(self, request: Request, slug: str, template_id: int) -> Response:
        get_object_or_404(MessageTemplate, organization=self.organization, id=template_id).delete()
        return Response(status=204)


# --- Incidents ----------------------------------------------------------------------------------------------


class IncidentsApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    def get(self, request: Request, slug: str) -> Response:
        rows = []
        for incident in selectors.incident_list(organization=self.organization, scope=result_scope(self.person)):
            data = incident_data(incident, slug=slug)
            data["recipients"] = incident.recipients_count  # type: ignore[attr-defined]
            data["answered"] = incident.answered_count  # type: ignore[attr-defined]
            rows.append(data)
        return Response(rows)

    def post(self, request: Request, slug: str) -> Response:
        if not selectors.can_manage_incidents(self.person):
            raise ApplicationError(
                _("Only crisis managers and safety administrators can do this."), code="forbidden", status=403
            )
        data = IncidentIn(data=request.data)
        data.is_valid(raise_exception=True)
        incident = services.incident_create(organization=self.organization, actor=self.person, **data.validated_data)
        return Response(incident_data(incident, slug=slug), status=201)


class IncidentApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    def get(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        scope = result_scope(self.person)
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
        data["can_manage"] = selectors.can_manage_incidents(self.person)
        return Response(data)

    def patch(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        if not selectors.can_manage_incidents(self.person):
            raise ApplicationError(
                _("Only crisis managers and safety administrators can do this."), code="forbidden", status=403
            )
        data = IncidentIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = {k: v for k, v in data.validated_data.items() if k in request.data}
        incident = services.incident_update(incident=incident, actor=self.person, **changes)
        return Response(incident_data(incident, slug=slug))


class _ManageIncidentView(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, ManagesIncidents]


class IncidentOpenApi(_ManageIncidentView):
    def post(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = services.incident_open(incident=access_incident(self.person, incident_id), actor=self.person)
        return Response(incident_data(incident, slug=slug))


class IncidentCompleteApi(_ManageIncidentView):
    def post(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = services.incident_complete(incident=access_incident(self.person, incident_id), actor=self.person)
        return Response(incident_data(incident, slug=slug))


class DispatchesApi(_ManageIncidentView):
    class In(serializers.Serializer[Any]):
        target = serializers.JSONField()
        preview = serializers.BooleanField(required=False, default=False)

    def get(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        return Response([dispatch_data(d) for d in incident.dispatches.select_related("created_by")])

    def post(self, request: Request, slug: str, incident_id: int) -> Response:
        """Send (or resend). With `preview: true`, only say how many people the target reaches."""
        incident = access_incident(self.person, incident_id)
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["preview"]:
            target = services.target_clean(self.organization, data.validated_data["target"])
            return Response({"recipients": len(selectors.target_people_ids(incident=incident, target=target))})
        dispatch = services.dispatch_create(incident=incident, actor=self.person, target=data.validated_data["target"])
        return Response(dispatch_data(dispatch), status=201)


# --- Results ------------------------------------------------------------------------------------------------


class ResultsApi(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    def get(self, request: Request, slug: str, incident_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        scope = result_scope(self.person)
        limit, offset = _page_params(request)
        rows, total = selectors.result_rows(
            incident=incident, scope=scope, filters=_filters(request), limit=limit, offset=offset
        )
        data: dict[str, Any] = {"total": total, "results": [result_row_data(r) for r in rows]}
        # ?tally=0: the live board has the numbers already and refreshes its list every few seconds.
        if request.query_params.get("tally") != "0":
            data["tally"] = tally_data(selectors.tally_by_department(incident=incident, scope=scope))
        return Response(data)


def _choice_text(question: dict[str, Any], value: Any, language: str) -> str:
    choices: dict[str, str] = {c["key"]: label(c, language) for c in question.get("choices", [])}
    if isinstance(value, list):
        return " / ".join(choices.get(str(v), str(v)) for v in value)
    return str(value) if question["kind"] == "text" else choices.get(str(value), str(value))


def results_csv(incident: Incident, rows: Sequence[ResultRow], history: dict[int, list[Answer]], language: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    questions = incident.questions
    writer.writerow(
        [
            _("Department code"),
            _("Department"),
            _("Login ID"),
            _("Name"),
            _("Answer"),
            _("Needs help"),
            *[label(q, language) for q in questions],
            _("First answered at"),
            _("Last answered at"),
            _("Answers"),
            _("Answered via"),
            _("Entered by"),
            _("Latitude"),
            _("Longitude"),
            _("Map"),
            _("History"),
        ]
    )
    local = timezone.localtime
    for row in rows:
        person, recipient, answer = row.person, row.recipient, row.answer
        values = answer.values if answer else {}
        lat, lng = (answer.latitude, answer.longitude) if answer else (None, None)
        past = "; ".join(
            f"{local(a.created_at):%Y-%m-%d %H:%M:%S} {AnswerStatus(a.status).label}"
            + (f" ({a.get_source_display()}{': ' + a.entered_by.display_name if a.entered_by else ''})")
            for a in history.get(person.id, [])
        )
        cells = [
            person.department.code if person.department else "",
            person.department.name if person.department else "",
            person.login_id,
            person.display_name,
            AnswerStatus(recipient.status).label,
            _("Yes") if recipient.needs_help else "",
            *[_choice_text(q, values[q["key"]], language) if q["key"] in values else "" for q in questions],
            f"{local(recipient.first_answered_at):%Y-%m-%d %H:%M:%S}" if recipient.first_answered_at else "",
            f"{local(recipient.answered_at):%Y-%m-%d %H:%M:%S}" if recipient.answered_at else "",
            str(recipient.answer_count),
            answer.get_source_display() if answer else "",
            answer.entered_by.display_name if answer and answer.entered_by else "",
            f"{lat:.6f}" if lat is not None else "",
            f"{lng:.6f}" if lng is not None else "",
            f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lng:.6f}#map=16/{lat:.6f}/{lng:.6f}"
            if lat is not None and lng is not None
            else "",
            past,
        ]
        # Coordinates are numbers we formatted ("-33.9" is not a formula); every other cell is guarded.
        writer.writerow([c if _NUMBER_RE.match(c) else excel_safe(c) for c in map(str, cells)])
    return out.getvalue()


class ResultsCsvApi(OrgAPIView):
    """The result list as CSV with the current filters: UTF-8 with a BOM for Excel, no live formulas, with the
    answer history and the location."""

    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    def get(self, request: Request, slug: str, incident_id: int) -> HttpResponse:
        incident = access_incident(self.person, incident_id)
        rows, _total = selectors.result_rows(
            incident=incident, scope=result_scope(self.person), filters=_filters(request), limit=1_000_000
        )
        history = selectors.answer_history(incident=incident, person_ids=[r.person.id for r in rows])
        body = "\ufeff" + results_csv(incident, rows, history, self.person.language)
        response = HttpResponse(body.encode("utf-8"), content_type="text/csv; charset=utf-8")
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
        response["Content-Disposition"] = f'attachment; filename="safety-{incident.id}-{stamp}.csv"'
        return response


class PersonAnswersApi(OrgAPIView):
    """GET a person's answer history; POST a proxy answer for them (who entered it and how is kept)."""

    permission_classes = [IsAuthenticated, PasswordChanged, ViewsResults]

    class In(serializers.Serializer[Any]):
        values = serializers.JSONField()
        note = serializers.CharField(max_length=200)

    def _person(self, incident: Incident, person_id: int) -> User:
        person = access_person(self.person, person_id, include_inactive=True)
        scope = result_scope(self.person)
        if scope is not None and person.department_id not in scope:
            raise Http404
        if not Recipient.objects.filter(incident=incident, person=person).exists():
            raise Http404
        return person

    def get(self, request: Request, slug: str, incident_id: int, person_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        person = self._person(incident, person_id)
        history = selectors.answer_history(incident=incident, person_ids=[person.id]).get(person.id, [])
        return Response(
            {"person": {"id": person.id, "name": person.display_name}, "answers": [answer_data(a) for a in history]}
        )

    def post(self, request: Request, slug: str, incident_id: int, person_id: int) -> Response:
        incident = access_incident(self.person, incident_id)
        person = self._person(incident, person_id)
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        answer = services.proxy_answer_submit(
            incident=incident,
            actor=self.person,
            person=person,
            values=data.validated_data["values"],
            note=data.validated_data["note"],
            scope=result_scope(self.person),
        )
        return Response(answer_data(answer), status=201)


# --- The person's side: own requests, answering signed in or from the link ------------------------------------


class MyRequestsApi(OrgAPIView):
    def get(self, request: Request, slug: str) -> Response:
        language = self.person.language
        return Response(
            [
                {**request_data(r, language=language), "url": f"/{slug}/safety/{r.incident_id}/"}
                for r in selectors.open_requests(person=self.person)
            ]
        )


class MyAnswerApi(OrgAPIView):
    def get(self, request: Request, slug: str, incident_id: int) -> Response:
        recipient = access_request(self.person, incident_id)
        return Response(request_data(recipient, language=self.person.language, with_instructions=True))

    def post(self, request: Request, slug: str, incident_id: int) -> Response:
        recipient = access_request(self.person, incident_id)
        data = AnswerIn(data=request.data)
        data.is_valid(raise_exception=True)
        services.answer_submit(
            incident_id=recipient.incident_id,
            person=self.person,
            values=data.validated_data["values"],
            source=data.validated_data["via"],
            location=data.validated_data["location"],
            recipient=recipient,
            client_key=data.validated_data["client_key"],
            quick=data.validated_data["quick"],
        )
        # The recipient now carries the new answer: the response needs no second read.
        return Response(request_data(recipient, language=self.person.language))


def link_recipient(slug: str, token: str, *, with_answer: bool = True) -> Recipient:
    """The request a signed link stands for: Http404 for an altered, expired or foreign token. One query: the
    organisation of the URL is checked in it (its slug), not read on its own. Of the person only what answering
    needs is read, and the current answer only `with_answer` (an answer being posted replaces it): building the
    SQL of a wider join costs more than running it (P5, bench.answers)."""
    link = answer_token_read(token)
    if link is None:
        raise Http404
    found = list(
        Recipient.objects.filter(
            incident_id=link.incident_id,
            person_id=link.person_id,
            incident__organization_id=link.organization_id,
            incident__organization__slug=slug,
            person__is_active=True,
        )
        .select_related("incident", "person", *(["answer"] if with_answer else []))
        .only(*_LINK_FIELDS, *(["answer"] if with_answer else []))[:1]  # unique: no ORDER BY needed
    )
    if not found:
        raise Http404
    return found[0]


# The recipient and its incident whole; of the person only what answering and the page use.
_LINK_FIELDS = (
    *[f.name for f in Recipient._meta.concrete_fields if f.name != "answer"],
    *[f"incident__{f.name}" for f in Incident._meta.concrete_fields],
    "person__id",
    "person__organization_id",
    "person__language",
    "person__is_active",
)


class LinkAnswerApi(APIView):
    """GET/POST /<slug>/api/safety/answer/<token>/: answer without signing in. The token is the credential (one
    incident, one person, one organisation, expiring); no session, so no CSRF either."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def get(self, request: Request, slug: str, token: str) -> Response:
        recipient = link_recipient(slug, token)
        return Response(request_data(recipient, language=recipient.person.language, with_instructions=True))

    def post(self, request: Request, slug: str, token: str) -> Response:
        if not throttle_allow(
            f"safety-link:{client_ip(request)}:{token[-16:]}",
            limit=ANSWER_RATE_PER_MINUTE,
            window_seconds=60,
            fail_open=True,  # an answer must not wait for Redis
        ):
            raise ApplicationError(_("Too many answers; wait a moment."), code="too_many_answers", status=429)
        recipient = link_recipient(slug, token, with_answer=False)
        data = AnswerIn(data=request.data)
        data.is_valid(raise_exception=True)
        via = data.validated_data["via"]
        services.answer_submit(
            incident_id=recipient.incident_id,
            person=recipient.person,
            values=data.validated_data["values"],
            source=AnswerSource.PUSH if via == "push" else AnswerSource.LINK,
            location=data.validated_data["location"],
            recipient=recipient,
            client_key=data.validated_data["client_key"],
            quick=data.validated_data["quick"],
        )
        # The recipient now carries the new answer: the response needs no second read (P5, bench.answers).
        return Response(request_data(recipient, language=recipient.person.language))


class LinkReceiptApi(APIView):
    """POST /<slug>/api/safety/answer/<token>/receipt/ {"event": "delivered" | "opened", "channel": "push" |
    "email" | "inapp"}: the service worker says a push arrived or was tapped. The token is the credential, as for
    answering; the delivery only moves forward. 200 {"state": the delivery's state after, or null without one}."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def post(self, request: Request, slug: str, token: str) -> Response:
        if not throttle_allow(
            f"safety-receipt:{client_ip(request)}:{token[-16:]}",
            limit=ANSWER_RATE_PER_MINUTE,
            window_seconds=60,
            fail_open=True,
        ):
            raise ApplicationError(_("Too many requests; wait a moment."), code="too_many_receipts", status=429)
        recipient = link_recipient(slug, token, with_answer=False)
        data = ReceiptIn(data=request.data)
        data.is_valid(raise_exception=True)
        state = services.delivery_report(
            incident_id=recipient.incident_id,
            person_id=recipient.person_id,
            channel=data.validated_data["channel"],
            event=data.validated_data["event"],
        )
        return Response({"state": state or None})


class PeopleChoiceApi(OrgAPIView):
    """People for the "chosen people" target and the administrators to notify (safety-confirmation users)."""

    permission_classes = [IsAuthenticated, PasswordChanged, ManagesIncidents]

    def get(self, request: Request, slug: str) -> Response:
        from directory.selectors import person_search

        found = person_search(organization=self.organization, query=request.query_params.get("q", ""), limit=30)
        if request.query_params.get("admins") == "1":
            administrators = set(
                RoleAssignment.objects.filter(user__in=found, role__in=selectors.ADMIN_ROLES).values_list(
                    "user_id", flat=True
                )
            )
            found = [p for p in found if p.id in administrators]
        return Response(
            [
                {
                    "id": p.id,
                    "name": p.display_name,
                    "department": p.department.name if p.department else "",
                    "login_id": p.login_id,
                    "safety_user": p.anpi_login_id is not None,
                }
                for p in found
            ]
        )
