"""REST endpoints of contact verification (連絡先の確認) under /<slug>/api/safety/checks/: the checks (list, start,
one check's counts per problem and its people, resend), the schedule, and the two link endpoints a person's test
notification uses without signing in (confirm, receipt). Views validate, fetch through an access helper, call one
service of safety.checks and shape the answer; the pages embed the same shapes.

Who: system administrators, crisis managers and safety administrators run checks and see everyone; managers see
everyone and department managers their subtree, read only. No shape here names an e-mail address: a private
contact shows only as the problem `email_bounced`, and delivery errors are not shown at all."""

from __future__ import annotations

from typing import Any

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
from directory.permissions import PasswordChanged
from directory.selectors import department_subtree_ids
from safety import checks
from safety.models import ContactCheck

LINK_RATE_PER_MINUTE = 30
PAGE_DEFAULT, PAGE_MAX = 50, 500


class ViewsChecks(BasePermission):
    message = "Your role does not allow this."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and checks.can_view_checks(user))


class RunsChecks(BasePermission):
    message = "Only system administrators, crisis managers and safety administrators can do this."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and checks.can_run_checks(user))


# --- Shapes -------------------------------------------------------------------------------------------------


def check_data(check: ContactCheck, *, slug: str, summary: tuple[int, int] | None = None) -> dict[str, Any]:
    """One check. `summary`: (people, confirmed) within the caller's scope."""
    people, confirmed = summary if summary is not None else (check.people, 0)
    return {
        "id": check.id,
        "created_at": check.created_at.isoformat(),
        "created_by": check.created_by.display_name if check.created_by else "",
        "scheduled": check.scheduled,
        "round": check.round,
        "running": check.finished_at is None,
        "finished_at": check.finished_at.isoformat() if check.finished_at else None,
        "people": people,
        "confirmed": confirmed,
        "url": f"/{slug}/safety/checks/?check={check.id}",
    }


def report_data(report: checks.CheckReport, *, offset: int, limit: int) -> dict[str, Any]:
    return {
        "counts": report.counts,
        "people": [
            {
                "id": row.person_id,
                "name": row.name,
                "kana": row.kana,
                "department": row.department,
                "problems": row.problems,
                "confirmed_at": row.confirmed_at.isoformat() if row.confirmed_at else None,
                "confirmed_via": row.confirmed_via,
                "channels": row.channels,
            }
            for row in report.rows
        ],
        "matched": report.matched,
        "offset": offset,
        "limit": limit,
    }


def schedule_data(organization: Any) -> dict[str, Any]:
    every_days, next_at = checks.check_schedule_get(organization=organization)
    return {"every_days": every_days, "next_at": next_at.isoformat() if next_at else None}


def report_params(request: Any, viewer: Any) -> dict[str, Any]:
    """`problem`, `department` (within the caller's scope), `offset` and `limit` of a report; ApplicationError for
    a value that is not one of them."""
    params = request.GET
    problem = params.get("problem", "")
    if problem not in checks.REPORT_FILTERS:
        raise ApplicationError(
            _("Unknown problem filter; use %(codes)s.") % {"codes": ", ".join(f for f in checks.REPORT_FILTERS if f)},
            code="bad_filter",
        )
    department_ids: set[int] | None = None
    department = params.get("department", "")
    if department:
        if not is_id(department):
            raise ApplicationError(_("department must be a department id."), code="bad_filter")
        from directory.models import Department

        found = Department.objects.filter(organization_id=viewer.organization_id, id=int(department)).first()
        if found is None:
            raise ApplicationError(_("Unknown department."), code="bad_filter")
        department_ids = department_subtree_ids(department=found)
    limit, offset = params.get("limit", ""), params.get("offset", "")
    return {
        "problem": problem,
        "department_ids": department_ids,
        "limit": min(int(limit), PAGE_MAX) if is_id(limit) else PAGE_DEFAULT,
        "offset": min(int(offset), 10**9) if is_id(offset) else 0,
    }


# --- The checks ---------------------------------------------------------------------------------------------


class ChecksApi(OrgAPIView):
    """GET: the organisation's checks, latest first (counts within the caller's scope); POST: start one now."""

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [IsAuthenticated(), PasswordChanged(), RunsChecks()]
        return [IsAuthenticated(), PasswordChanged(), ViewsChecks()]

    def get(self, request: Request, slug: str) -> Response:
        found = checks.check_list(organization=self.organization)
        summaries = checks.check_summaries(checks=found, scope=checks.check_scope(self.person))
        return Response([check_data(c, slug=slug, summary=summaries.get(c.id, (0, 0))) for c in found])

    def post(self, request: Request, slug: str) -> Response:
        check = checks.check_start(organization=self.organization, actor=self.person)
        return Response(check_data(check, slug=slug, summary=(check.people, 0)), status=201)


class CheckApi(OrgAPIView):
    """GET: one check with its counts per problem and a page of its people (?problem=, ?department=, ?offset=,
    ?limit=). Problems are judged by this check (and today's subscriptions and bounces)."""

    permission_classes = [IsAuthenticated, PasswordChanged, ViewsChecks]

    def get(self, request: Request, slug: str, check_id: int) -> Response:
        check = checks.access_check(self.person, check_id)
        scope = checks.check_scope(self.person)
        params = report_params(request, self.person)
        report = checks.check_report(check=check, scope=scope, **params)
        summary = (report.counts["total"], report.counts["confirmed"])
        return Response(
            {
                "check": check_data(check, slug=slug, summary=summary),
                **report_data(report, offset=params["offset"], limit=params["limit"]),
            }
        )


class CheckResendApi(OrgAPIView):
    """POST {"problems": [codes]} (optional; default: every problem but no_contact): send the latest check again
    to just the people with those problems, on the channels they have."""

    permission_classes = [IsAuthenticated, PasswordChanged, RunsChecks]

    class In(serializers.Serializer[Any]):
        problems = serializers.ListField(child=serializers.CharField(max_length=20), required=False, max_length=10)

    def post(self, request: Request, slug: str, check_id: int) -> Response:
        data = self.In(data=request.data)
        data.is_valid(raise_exception=True)
        check = checks.access_check(self.person, check_id)
        people = checks.check_resend(check=check, actor=self.person, problems=data.validated_data.get("problems"))
        check.refresh_from_db()
        return Response({"check": check_data(check, slug=slug, summary=(check.people, 0)), "people": people})


class ScheduleApi(OrgAPIView):
    """GET: {"every_days", "next_at"}; PUT {"every_days": 0..365} (0: off): a check every N days, the first N
    days from now."""

    def get_permissions(self) -> list[Any]:
        if self.request.method == "GET":
            return [IsAuthenticated(), PasswordChanged(), ViewsChecks()]
        return [IsAuthenticated(), PasswordChanged(), RunsChecks()]

    def get(self, request: Request, slug: str) -> Response:
        return Response(schedule_data(self.organization))

    def put(self, request: Request, slug: str) -> Response:
        if not isinstance(request.data, dict) or "every_days" not in request.data:
            raise ApplicationError(_("Give every_days (0 turns the schedule off)."), code="bad_every_days")
        checks.check_schedule_set(organization=self.organization, every_days=request.data["every_days"])
        return Response(schedule_data(self.organization))


# --- The link: no sign-in, the token is the credential ----------------------------------------------------------


class _LinkApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def _throttle(self, request: Request, token: str) -> None:
        if not throttle_allow(
            f"check-link:{client_ip(request)}:{token[-16:]}",
            limit=LINK_RATE_PER_MINUTE,
            window_seconds=60,
            fail_open=True,  # a confirmation must not wait for Redis
        ):
            raise ApplicationError(_("Too many requests; wait a moment."), code="too_many_requests", status=429)

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        if not isinstance(request.data, dict):
            raise ApplicationError(_("Send a JSON object."), code="invalid")
        return request.data


class LinkConfirmApi(_LinkApi):
    """POST {"via": "push" | "mail"} (the notification's button also sends "quick" and "client_key", which
    change nothing: confirming twice is confirming once) → {"confirmed": true, "confirmed_at", "confirmed_via"}."""

    def post(self, request: Request, slug: str, token: str) -> Response:
        self._throttle(request, token)
        via = self._body(request).get("via", "push")
        check_person = checks.check_confirm(token, via, slug=slug)
        return Response(
            {
                "confirmed": True,
                "confirmed_at": check_person.confirmed_at.isoformat() if check_person.confirmed_at else None,
                "confirmed_via": check_person.confirmed_via,
                "message": _("Thank you. Your administrator can see that notifications reach you."),
            }
        )


class LinkReceiptApi(_LinkApi):
    """POST {"event": "delivered" | "opened", "channel": "push" | "email"} → {"state": <the state after>}."""

    def post(self, request: Request, slug: str, token: str) -> Response:
        self._throttle(request, token)
        body = self._body(request)
        state = checks.check_receipt(token, slug=slug, event=body.get("event"), channel=body.get("channel"))
        return Response({"state": state})
